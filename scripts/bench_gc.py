#!/usr/bin/env python3
"""A synthetic backups directory for scripts/bench-gc.sh: NIGHTS incremental backups in wqm's
on-disk format (docs/manifest.md, docs/incremental.md) and the chunk store they name, without
Qdrant. Night 1 names CHUNKS chunks; each later night names the previous night's chunks with
CHURN of them replaced by new ones (the incremental benchmark's nightly churn), so the store
ends with about CHUNKS * (1 + (NIGHTS - 1) * CHURN) distinct chunks.

Garbage collection lists chunk files and reads indexes, never a loose chunk's content, so every
chunk file is empty: the indexes and the number of files are what the benchmark measures.

With LAYOUT `packs` the store is one of pack files, as wqm makes them: each night's new chunks
packed 64 at a time (a 4 MiB pack of 64 KiB chunks), a pack's index object beside it and its
copy at the pack's end. A packed chunk's content is its 8-byte number (its id is the sha256 of
it, as for loose chunks), stored as a zstd frame of one raw block, so a repack can read and check
it: the packs are small, their number and their indexes are a year's.

Each night also gets its reference list (metadata/chunk-refs, recorded in the manifest as
`create` writes it), unless REFS is 0: then the nights are as a wqm before reference lists made
them, and garbage collection reads their indexes.

    bench_gc.py DIR VERSION [NIGHTS [CHUNKS [CHURN [REFS [LAYOUT]]]]]
"""
import hashlib
import json
import os
import random
import sys
import time

DAY = 86400.0
PACK_CHUNKS = 64


def raw_zstd(content):
    """`content` as a zstd frame of one raw block (no compression, no checksum)."""
    header = b"\x28\xb5\x2f\xfd" + bytes([0x20, len(content)])
    block = (1 | len(content) << 3).to_bytes(3, "little")
    return header + block + content


class Packer:
    """Chunks appended to a pack, written with its index (and the index's copy) when full."""

    def __init__(self, store, rng):
        self.store, self.rng = store, rng
        self.data, self.lines = bytearray(), []

    def add(self, hexid, content):
        stored = raw_zstd(content)
        self.lines.append("%s %d %d %d\n" % (hexid, len(self.data), len(stored), len(content)))
        self.data += stored
        if len(self.lines) == PACK_CHUNKS:
            self.flush()

    def flush(self):
        if not self.lines:
            return
        pack = "%032x" % self.rng.getrandbits(128)
        index = ("wqm-pack-index 1\n" + "".join(self.lines)).encode()
        fan = os.path.join(self.store, "packs", pack[:2])
        os.makedirs(fan, exist_ok=True)
        with open(os.path.join(fan, pack), "wb") as f:
            f.write(bytes(self.data) + index + len(index).to_bytes(8, "little") + b"wqmpack1")
        with open(os.path.join(self.store, "index", pack), "wb") as f:
            f.write(index)
        self.data, self.lines = bytearray(), []


def main():
    out, version = sys.argv[1], sys.argv[2]
    nights = int(sys.argv[3]) if len(sys.argv) > 3 else 365
    per_night = int(sys.argv[4]) if len(sys.argv) > 4 else 215_500
    churn = float(sys.argv[5]) if len(sys.argv) > 5 else 0.01
    with_refs = sys.argv[6] != "0" if len(sys.argv) > 6 else True
    packed = len(sys.argv) > 7 and sys.argv[7] == "packs"
    rng = random.Random(22)
    store = os.path.join(out, ".wqm-chunks")
    params = {"format": 1, "chunker": "fastcdc-2020", "min_size": 16384,
              "avg_size": 65536, "max_size": 262144, "hash": "sha256", "compression": "zstd"}
    if packed:
        os.makedirs(os.path.join(store, "index"))
        params.update({"format": 2, "required_features": ["lock-objects", "packs"]})
        packer = Packer(store, rng)
    else:
        os.makedirs(os.path.join(store, "chunks"))
        for fan in range(256):
            os.mkdir(os.path.join(store, "chunks", "%02x" % fan))
        open(os.path.join(store, "lock"), "w").close()
    with open(os.path.join(store, "store.json"), "w") as f:
        json.dump(params, f)

    made = 0

    def new_chunk():
        nonlocal made
        made += 1
        content = made.to_bytes(8, "little")
        hexid = hashlib.sha256(content).hexdigest()
        if packed:
            packer.add(hexid, content)
        else:
            fd = os.open(os.path.join(store, "chunks", hexid[:2], hexid),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.close(fd)
        # Content 64 KiB, stored (zstd) a little smaller: the index's three fields.
        return ("%s 65536 %d\n" % (hexid, 40000 + made % 20000)).encode()

    lines = [new_chunk() for _ in range(per_night)]
    replaced = max(1, int(per_night * churn))
    start = time.time() - nights * DAY
    for night in range(1, nights + 1):
        if night > 1:
            for i in rng.sample(range(per_night), replaced):
                lines[i] = new_chunk()
        if packed:
            packer.flush()  # a night's packs end with it, as a create's
        name = "night-%03d" % night
        backup = os.path.join(out, name)
        os.makedirs(os.path.join(backup, "metadata"))
        for sub in ("collections", "sqlite", "config"):
            os.makedirs(os.path.join(backup, sub))
        index = b"wqm-chunk-index 1\n" + b"".join(lines)
        rel = "collections/projects.snapshot.chunks"
        with open(os.path.join(backup, rel), "wb") as f:
            f.write(index)
        manifest = {
            "format_version": 2,
            "version": version,
            "timestamp": start + night * DAY,
            "collections": {"projects": 40000},
            "total_documents": 40000,
            "during_operations": False,
            "partial_backup": False,
            "compression": "chunks",
            "checksum_algorithm": "sha256",
            "files": [{
                "path": rel,
                "kind": "collection_snapshot",
                "size": len(index),
                "compression": "chunks",
                "checksum": {"algorithm": "sha256", "value": hashlib.sha256(index).hexdigest()},
                "content_size": 65536 * per_night,
                "content_sha256": hashlib.sha256(name.encode()).hexdigest(),
            }],
            "collection_details": {"projects": {"points_count": 40000, "snapshot": rel}},
        }
        if with_refs:
            # The first 8 bytes of each id named, sorted, once (src/store/chunks/refs.rs).
            refs = b"wqm-chunk-refs 1\n" + b"".join(sorted({bytes.fromhex(l[:16].decode()) for l in lines}))
            with open(os.path.join(backup, "metadata", "chunk-refs"), "wb") as f:
                f.write(refs)
            manifest["chunk_refs"] = {"count": (len(refs) - 17) // 8,
                                      "sha256": hashlib.sha256(refs).hexdigest()}
        with open(os.path.join(backup, "metadata", "manifest.json"), "w") as f:
            json.dump(manifest, f, indent=2)
    print("%d nights, %d chunks" % (nights, made))


if __name__ == "__main__":
    main()
