#!/usr/bin/env python3
"""The collection of the incremental benchmark, shaped as workspace-qdrant-mcp's `projects`:
dense 384-dim (Cosine) + sparse `keywords`, a `tag` payload index.

usage: bench_incremental.py load URL COLLECTION POINTS
       bench_incremental.py churn URL COLLECTION POINTS NIGHT
`churn` is one night: ~1 % new points, the payload of ~1 % edited, ~0.25 % deleted (each night
deletes its own ids of the lower half and edits ids of the upper half, which are never deleted).
Both wait until the collection is green (optimized), as a nightly backup finds it.
"""
import json
import random
import sys
import time
import urllib.request

mode, url, name, points = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url + path, data=data, method=method, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def point(i, rng):
    return {"id": i,
            "vector": {"dense": [round(rng.uniform(-1, 1), 6) for _ in range(384)],
                       "keywords": {"indices": sorted(rng.sample(range(30000), 12)),
                                    "values": [round(rng.random(), 4) for _ in range(12)]}},
            "payload": {"tag": f"t{i % 40}", "file_path": f"src/module_{i % 900}/file_{i}.rs",
                        "content": f"chunk {i} " + "lorem ipsum " * rng.randint(5, 40)}}


def upsert(ids, rng):
    ids = list(ids)
    for start in range(0, len(ids), 500):
        call("PUT", f"/collections/{name}/points?wait=true",
             {"points": [point(i, rng) for i in ids[start:start + 500]]})


def settle():
    for _ in range(600):
        if call("GET", f"/collections/{name}")["result"]["status"] == "green":
            return
        time.sleep(0.5)
    sys.exit("the collection never became green")


if mode == "load":
    call("PUT", f"/collections/{name}", {"vectors": {"dense": {"size": 384, "distance": "Cosine"}},
                                         "sparse_vectors": {"keywords": {}}})
    call("PUT", f"/collections/{name}/index?wait=true", {"field_name": "tag", "field_schema": "keyword"})
    upsert(range(points), random.Random(1))
    settle()
elif mode == "churn":
    night = int(sys.argv[5])
    rng = random.Random(1000 + night)
    new, deleted = points // 100, points // 400
    upsert(range(points + (night - 1) * new, points + night * new), rng)
    call("POST", f"/collections/{name}/points/payload?wait=true",
         {"payload": {"edited": night}, "points": rng.sample(range(points // 2, points), new)})
    call("POST", f"/collections/{name}/points/delete?wait=true",
         {"points": list(range((night - 1) * deleted, night * deleted))})
    settle()
else:
    sys.exit(__doc__)
