# ociregistry container image: FROM scratch, one statically linked binary, nothing else that runs.
#
# This Dockerfile does NOT compile: it COPYs a binary built beforehand on the host, so it builds without
# pulling any base image (there is none to pull on offline build machines). Build with:
#
#   scripts/build-image     # cargo build of the static binary, objcopy --strip-debug, docker build,
#                           # tags ociregistry:0.2.0 and :latest
#
# or by hand (the default BINARY still carries the release profile's line tables: ~80 MB instead of ~20 MB):
#
#   RUSTFLAGS="-C target-feature=+crt-static" \
#     cargo build --release --locked --target x86_64-unknown-linux-gnu --bin ociregistry
#   docker build -t ociregistry:0.2.0 .          # or --build-arg BINARY=target/image/ociregistry
#
# For CI systems that can pull images, Dockerfile.multistage compiles inside a rust:*-bookworm stage and
# produces the same final stage. See docs/container-image.md.
#
# Why a static glibc binary and not musl: the musl target is not installable on the machines this is built on;
# glibc >= 2.34 has the `files` and `dns` NSS modules inside libc itself, so getaddrinfo in a static binary
# resolves /etc/hosts and DNS without dlopen()ing anything (verified by tests/image/check.sh, which reaches its
# upstream by a host name that exists only in the container's /etc/hosts). /etc/nsswitch.conf makes the order
# "files, then dns" (glibc's built-in default without the file is dns first).
#
# What is in the image (no shell, no package manager, no libc .so files):
#   /ociregistry              the binary (ENTRYPOINT)
#   /etc/nsswitch.conf        hosts: files dns
#   /etc/passwd, /etc/group   root and nonroot (65532), for tools that map the uid to a name
#   /var/lib/ociregistry/     empty data directory owned by 65532:65532 (mount a volume here)
# No CA bundle: the upstream client (reqwest + rustls) uses the Mozilla roots compiled into the binary
# (webpki-roots) and never reads /etc/ssl; extra CAs are given per registry with `tls.ca_file` in the config.
# /etc/hosts, /etc/resolv.conf and /etc/hostname are provided by the container engine at run time.

# Path of the prebuilt static binary, relative to the build context. .dockerignore lets only two binaries into
# the context: this static release binary and target/image/ociregistry (scripts/build-image's copy of it
# without debug sections). target/release/ociregistry is dynamically linked and would not start here.
ARG BINARY=target/x86_64-unknown-linux-gnu/release/ociregistry

FROM scratch

ARG BINARY
ARG VERSION=0.2.0
ARG REVISION=unknown

LABEL org.opencontainers.image.title="ociregistry" \
      org.opencontainers.image.description="Pull-only, pull-through caching OCI Distribution server" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="scratch"

COPY image/rootfs/ /
# image/data/ reaches the build context empty (.dockerignore drops its .keep), so this creates an empty
# directory owned by the runtime user: a named volume mounted here inherits that ownership.
COPY --chown=65532:65532 image/data/ /var/lib/ociregistry/
COPY ${BINARY} /ociregistry

USER 65532:65532
# No WORKDIR: the working directory stays /, which 65532 cannot write, so an operations command run without
# --data-dir (`docker exec C /ociregistry list`) fails instead of creating ./ociregistry-data somewhere.
EXPOSE 8080
VOLUME ["/var/lib/ociregistry"]

# Health: GET /healthz (alive) and GET /readyz (ready) on the API port. No HEALTHCHECK instruction: there is
# no shell or HTTP client in the image to run one with; orchestrators probe the port from outside.
ENTRYPOINT ["/ociregistry"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/ociregistry"]
