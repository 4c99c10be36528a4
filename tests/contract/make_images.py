#!/usr/bin/env python3
"""Builds the contract test's images as OCI image layouts, byte for byte the same on every run and machine.

The digests therefore never change, and schema/openapi.yaml can carry them as real `examples` that the contract
test (tests/contract/run.sh) sends to a server holding these images. Layers are uncompressed tars
(application/vnd.oci.image.layer.v1.tar) written with fixed metadata, so no compressor version can change them.

  hello:latest       one image manifest (linux/amd64): config + one small layer
  contract/app:v1    an image index of linux/amd64 and linux/arm64 manifests, each with config + a small layer
                     + a 192 KiB data layer (for Range requests)

Usage: make_images.py OUT_DIR  -> OUT_DIR/<layout>/ (oci-layout, index.json, blobs/sha256/...) and
OUT_DIR/images.json: {"hello": {"repository", "tag", "layout", "top", "manifests", "blobs"}, ...}
where "top" is the digest the tag points at, "manifests" every manifest digest, "blobs" every config/layer
digest with its size.
"""

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
EPOCH = 1704067200  # 2024-01-01T00:00:00Z
CREATED = "2024-01-01T00:00:00Z"


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def pseudo_random(seed, size):
    """Deterministic incompressible bytes: SHA-256 in counter mode."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def tar_layer(files):
    """An uncompressed ustar archive of {path: bytes}, with fixed owner, mode and time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        dirs = sorted({str(Path(p).parent) for p in files} - {"."})
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info)
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), 0o644, EPOCH
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class Layout:
    def __init__(self, root):
        self.root = root
        (root / "blobs/sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(self, data, media_type):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        (self.root / "blobs/sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def tag(self, descriptor, tag):
        ref = dict(descriptor, annotations={"org.opencontainers.image.ref.name": tag})
        (self.root / "index.json").write_bytes(canonical_json({"schemaVersion": 2, "manifests": [ref]}))


def image(layout, name, platform, layers, record):
    """Writes config, layers and manifest; returns the manifest descriptor."""
    layer_descs = [layout.put(tar_layer(files), MT_LAYER_TAR) for files in layers]
    diff_ids = [d["digest"] for d in layer_descs]  # uncompressed: diff_id == digest
    config = dict(
        platform,
        created=CREATED,
        config={"Entrypoint": ["/bin/hello"], "Labels": {"org.opencontainers.image.title": name}},
        rootfs={"type": "layers", "diff_ids": diff_ids},
        history=[{"created": CREATED, "created_by": f"contract layer {i}"} for i in range(len(layers))],
    )
    config_desc = layout.put(canonical_json(config), MT_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": MT_MANIFEST, "config": config_desc, "layers": layer_descs}
    manifest_desc = layout.put(canonical_json(manifest), MT_MANIFEST)
    for d in [config_desc, *layer_descs]:
        record["blobs"][d["digest"]] = d["size"]
    record["manifests"].append(manifest_desc["digest"])
    return dict(manifest_desc, platform=platform)


def build(out):
    images = {}

    record = {"repository": "hello", "tag": "latest", "layout": "hello", "manifests": [], "blobs": {}}
    layout = Layout(out / "hello")
    desc = image(
        layout,
        "hello",
        {"architecture": "amd64", "os": "linux"},
        [{"bin/hello": b"#!/bin/sh\necho hello from the ociregistry contract test\n"}],
        record,
    )
    desc.pop("platform")
    layout.tag(desc, record["tag"])
    record["top"] = desc["digest"]
    images["hello"] = record

    record = {"repository": "contract/app", "tag": "v1", "layout": "app", "manifests": [], "blobs": {}}
    layout = Layout(out / "app")
    descs = []
    for arch, platform in (
        ("amd64", {"architecture": "amd64", "os": "linux"}),
        ("arm64", {"architecture": "arm64", "os": "linux", "variant": "v8"}),
    ):
        descs.append(
            image(
                layout,
                "contract/app",
                platform,
                [
                    {"bin/hello": f"#!/bin/sh\necho hello from contract/app on {arch}\n".encode(),
                     "etc/os-release": f"NAME=contract\nARCH={arch}\n".encode()},
                    {"data/blob.bin": pseudo_random(f"contract/app/{arch}", 192 * 1024)},
                ],
                record,
            )
        )
    index = {"schemaVersion": 2, "mediaType": MT_INDEX, "manifests": descs}
    index_desc = layout.put(canonical_json(index), MT_INDEX)
    layout.tag(index_desc, record["tag"])
    record["top"] = index_desc["digest"]
    record["manifests"].insert(0, index_desc["digest"])
    images["app"] = record

    (out / "images.json").write_text(json.dumps(images, indent=2, sort_keys=True) + "\n")
    return images


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    print(json.dumps(build(Path(sys.argv[1])), indent=2, sort_keys=True))
