# shellcheck shell=bash
# Building OCI image layouts without network access, and comparing pulled layouts with them. Shared by
# tests/e2e/run.sh and tests/e2e/upstreams.sh; sourced after `set -euo pipefail`. Functions read the
# caller's globals at call time: TMP (expected values go to $TMP/expect/VARIANT/, scratch to $TMP/build/)
# and TAG (the tag written into a layout's index.json). Needs jq, tar, gzip, sha256sum, cmp.

# shellcheck disable=SC2034  # used by the callers
MT_INDEX="application/vnd.oci.image.index.v1+json"
MT_MANIFEST="application/vnd.oci.image.manifest.v1+json"
MT_CONFIG="application/vnd.oci.image.config.v1+json"
MT_LAYER="application/vnd.oci.image.layer.v1.tar+gzip"
ACCEPT_MANIFESTS="$MT_INDEX, $MT_MANIFEST, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

expect_eq() { # ACTUAL EXPECTED WHAT
  if [[ "$1" != "$2" ]]; then
    echo "mismatch: $3: expected '$2', got '$1'" >&2
    return 1
  fi
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# header_value HEADERS_FILE NAME: value of the last occurrence of header NAME (case-insensitive), CR stripped
header_value() {
  awk -v n="$(printf '%s' "$2" | tr 'A-Z' 'a-z')" '
    { line = $0; sub(/\r$/, "", line); i = index(line, ":"); if (i == 0) next
      k = tolower(substr(line, 1, i - 1)); v = substr(line, i + 1); sub(/^[ \t]+/, "", v); sub(/[ \t]+$/, "", v)
      if (k == n) last = v }
    END { print last }' "$1"
}

# put_blob LAYOUT FILE -> moves FILE into LAYOUT/blobs/sha256/<hex>, prints "sha256:<hex> <size>"
put_blob() {
  local layout=$1 f=$2 h s
  h="$(sha256_of "$f")"
  s="$(stat -c %s "$f")"
  mv "$f" "$layout/blobs/sha256/$h"
  echo "sha256:$h $s"
}

# build_image LAYOUT VARIANT RANDOM_KIB: two platforms (linux/amd64, linux/arm64/v8), each with
#   layer 1: a few small files (text, a script, a symlink, a directory tree), gzip'd tar
#   layer 2: RANDOM_KIB KiB of random data (incompressible: exercises streaming of a multi-MiB blob)
# a config blob with rootfs.diff_ids = sha256 of the uncompressed tars, one image manifest per platform and an
# image index, referenced from the layout's index.json as $TAG.
# Expected values are written to $TMP/expect/VARIANT/.
build_image() {
  local layout=$1 variant=$2 kib=$3
  local work="$TMP/build/$variant" exp="$TMP/expect/$variant"
  mkdir -p "$layout/blobs/sha256" "$work" "$exp"
  printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
  local created="2024-01-01T00:00:00Z"
  local descs="[]"
  local arch
  for arch in amd64 arm64; do
    local r="$work/$arch" platform_json
    mkdir -p "$r/l1/etc" "$r/l1/app/bin" "$r/l1/app/share/doc" "$r/l2/data"
    printf 'NAME=ociregistry-e2e\nVARIANT=%s\nARCH=%s\n' "$variant" "$arch" >"$r/l1/etc/os-release"
    printf '#!/bin/sh\necho "hello from %s on %s"\n' "$variant" "$arch" >"$r/l1/app/bin/hello"
    chmod 0755 "$r/l1/app/bin/hello"
    ln -s hello "$r/l1/app/bin/hi"
    printf 'ociregistry end-to-end test image (%s)\n' "$variant" >"$r/l1/app/share/doc/README"
    head -c 4096 /dev/urandom | od -An -tx1 >"$r/l1/app/share/doc/noise.txt"
    head -c "$((kib * 1024))" /dev/urandom >"$r/l2/data/random.bin"

    local layers="[]" diffs="[]" l
    for l in l1 l2; do
      tar --sort=name --mtime='@1704067200' --owner=0 --group=0 --numeric-owner \
        -C "$r/$l" -cf "$r/$l.tar" .
      local diff_id
      diff_id="sha256:$(sha256_of "$r/$l.tar")"
      gzip -n -6 -c "$r/$l.tar" >"$r/$l.tar.gz"
      local d s
      read -r d s < <(put_blob "$layout" "$r/$l.tar.gz")
      layers="$(jq -c --arg d "$d" --argjson s "$s" --arg mt "$MT_LAYER" '. + [{mediaType: $mt, digest: $d, size: $s}]' <<<"$layers")"
      diffs="$(jq -c --arg d "$diff_id" '. + [$d]' <<<"$diffs")"
      echo "$d" >>"$exp/$arch.blobs"
    done

    if [[ $arch == arm64 ]]; then
      platform_json='{"architecture":"arm64","os":"linux","variant":"v8"}'
    else
      platform_json='{"architecture":"amd64","os":"linux"}'
    fi
    jq -n -c --argjson p "$platform_json" --argjson diffs "$diffs" --arg created "$created" --arg v "$variant" '
      $p + {
        created: $created,
        config: {
          Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
          Entrypoint: ["/app/bin/hello"],
          WorkingDir: "/app",
          Labels: {"org.opencontainers.image.title": ("ociregistry-e2e-" + $v)}
        },
        rootfs: {type: "layers", diff_ids: $diffs},
        history: [
          {created: $created, created_by: "e2e: small files"},
          {created: $created, created_by: "e2e: random data"}
        ]
      }' >"$r/config.json"
    local cd cs
    read -r cd cs < <(put_blob "$layout" "$r/config.json")
    echo "$cd" >>"$exp/$arch.blobs"

    jq -n -c --arg mt "$MT_MANIFEST" --arg cmt "$MT_CONFIG" --arg cd "$cd" --argjson cs "$cs" --argjson layers "$layers" '
      {schemaVersion: 2, mediaType: $mt, config: {mediaType: $cmt, digest: $cd, size: $cs}, layers: $layers}' \
      >"$r/manifest.json"
    local md ms
    read -r md ms < <(put_blob "$layout" "$r/manifest.json")
    echo "$md" >>"$exp/$arch.blobs"
    echo "$md" >"$exp/$arch.manifest"
    descs="$(jq -c --arg mt "$MT_MANIFEST" --arg d "$md" --argjson s "$ms" --argjson p "$platform_json" \
      '. + [{mediaType: $mt, digest: $d, size: $s, platform: $p}]' <<<"$descs")"
  done

  jq -n -c --arg mt "$MT_INDEX" --argjson m "$descs" \
    '{schemaVersion: 2, mediaType: $mt, manifests: $m, annotations: {"org.opencontainers.image.description": "ociregistry e2e"}}' \
    >"$work/index.json"
  local id is
  read -r id is < <(put_blob "$layout" "$work/index.json")
  echo "$id" >"$exp/index.digest"
  jq -n -c --arg mt "$MT_INDEX" --arg d "$id" --argjson s "$is" --arg tag "$TAG" \
    '{schemaVersion: 2, manifests: [{mediaType: $mt, digest: $d, size: $s, annotations: {"org.opencontainers.image.ref.name": $tag}}]}' \
    >"$layout/index.json"
  (cd "$layout/blobs/sha256" && ls | sed 's/^/sha256:/' | sort) >"$exp/blobs.list"
  echo "built $variant: index $id, $(wc -l <"$exp/blobs.list") blobs, $(du -sk "$layout/blobs" | cut -f1) KiB"
}

# compare_layout SRC OUT VARIANT: OUT (written by skopeo) holds exactly the pushed blobs, byte for byte,
# and its $TAG points at the pushed index digest.
compare_layout() {
  local src=$1 out=$2 variant=$3
  local exp="$TMP/expect/$variant"
  local got_index
  got_index="$(jq -r --arg tag "$TAG" '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"] == $tag) | .digest' "$out/index.json")"
  expect_eq "$got_index" "$(cat "$exp/index.digest")" "index digest of pulled $variant:$TAG"
  local got_list
  got_list="$(cd "$out/blobs/sha256" && ls | sed 's/^/sha256:/' | sort)"
  if [[ "$got_list" != "$(cat "$exp/blobs.list")" ]]; then
    echo "pulled blob set differs from pushed one:" >&2
    diff <(cat "$exp/blobs.list") <(echo "$got_list") >&2 || true
    return 1
  fi
  local d h
  while read -r d; do
    h="${d#sha256:}"
    cmp "$src/blobs/sha256/$h" "$out/blobs/sha256/$h"
    expect_eq "sha256:$(sha256_of "$out/blobs/sha256/$h")" "$d" "content digest of pulled blob"
  done <"$exp/blobs.list"
  echo "$variant: index $got_index and $(wc -l <"$exp/blobs.list") blobs identical to what was pushed"
}
