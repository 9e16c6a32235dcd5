#!/usr/bin/env python3
"""Fills a Qdrant collection with random dense vectors for the benchmark (idempotent).

usage: bench_load.py URL COLLECTION POINTS DIM [SHARDS REPLICAS [sparse|text]]
Vectors are random floats, as incompressible as real embeddings; HNSW indexing is off so the
load is quick and the snapshot holds plain vector storage. With `sparse`, the collection is
shaped as workspace-qdrant-mcp makes them: a named dense vector `dense` and a sparse vector
`keywords` (20 random terms per point). With `text`, each point also carries a `content`
payload of ~1.5 KB of real text (windows of this repository's docs), as workspace-qdrant-mcp
stores document chunks beside their embeddings.
"""
import glob
import os
import json
import random
import sys
import urllib.request

url, name, points, dim = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
shards = int(sys.argv[5]) if len(sys.argv) > 5 else 1
replicas = int(sys.argv[6]) if len(sys.argv) > 6 else 1
sparse = len(sys.argv) > 7 and sys.argv[7] == "sparse"
text = len(sys.argv) > 7 and sys.argv[7] == "text"
docs = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")
corpus = "".join(open(f).read() for f in sorted(glob.glob(os.path.join(docs, "**/*.md"), recursive=True))) if text else ""


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, None


status, info = call("GET", f"/collections/{name}")
if status == 200:
    _, count = call("POST", f"/collections/{name}/points/count", {"exact": True})
    if count["result"]["count"] == points:
        sys.exit(0)
    call("DELETE", f"/collections/{name}")
dense = {"size": dim, "distance": "Cosine", "on_disk": True}
call("PUT", f"/collections/{name}", {
    **({"vectors": {"dense": dense}, "sparse_vectors": {"keywords": {}}} if sparse else {"vectors": dense}),
    "hnsw_config": {"m": 0},
    "optimizers_config": {"indexing_threshold": 0},
    "shard_number": shards,
    "replication_factor": replicas,
})
rng = random.Random(42)


def vector():
    floats = [round(rng.uniform(-1, 1), 6) for _ in range(dim)]
    if not sparse:
        return floats
    terms = sorted(rng.sample(range(30000), 20))
    return {"dense": floats, "keywords": {"indices": terms, "values": [round(rng.random(), 4) for _ in terms]}}


def payload(i):
    fields = {"n": i, "tenant_id": f"t{i % 7}"}
    if text:
        at = rng.randrange(len(corpus) - 1500)
        fields["content"] = corpus[at:at + 1500]
    return fields


batch = 500
for start in range(0, points, batch):
    ids = range(start, min(points, start + batch))
    body = {"points": [{"id": i, "vector": vector(),
                        "payload": payload(i)} for i in ids]}
    status, _ = call("PUT", f"/collections/{name}/points?wait=true", body)
    if status != 200:
        sys.exit(f"upsert failed with {status}")
    if start % 20000 == 0:
        print(f"  loaded {start + len(ids)}/{points}", file=sys.stderr)
