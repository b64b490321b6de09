"""A mixed, deterministic workload through the proxy with the official client, with an oracle.

usage: workload.py PROXY_URL PREFIX ITERATIONS [SEED]

Creates, adds, upserts, updates, deletes records and deletes collections, all under PREFIX. It
owns every id it writes, so it knows the expected final state. Prints one JSON line:
{"ops", "failures", "collections": {name: id}, "expected": {name: sorted ids}, "ids_stable"}.
"""
import json
import random
import sys
import time

from chroma_client import client_for

url, prefix, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(int(sys.argv[4]) if len(sys.argv) > 4 else 7)
client = client_for(url)
live = {}          # name -> Collection
ids_of = {}        # name -> canonical id first received
expected = {}      # name -> set of record ids
failures = []
ops = 0
next_id = 0
slowest = 0.0


def vec():
    return [rng.random() for _ in range(4)]


def run(kind, call):
    global ops, slowest
    ops += 1
    started = time.monotonic()
    try:
        result = call()
        return True, result
    except Exception as e:  # every failure is reported, none is retried
        failures.append(f"{kind}: {type(e).__name__}: {e}")
        return False, None
    finally:
        slowest = max(slowest, time.monotonic() - started)


for i in range(iterations):
    if i % 15 == 0 or not live:
        name = f"{prefix}-c{i}"
        ok, col = run("create", lambda: client.create_collection(name, embedding_function=None, metadata={"i": i}))
        if ok:
            live[name] = col
            ids_of[name] = str(col.id)
            expected[name] = set()
        continue
    if i % 40 == 39 and len(live) > 1:
        name = sorted(live)[0]
        ok, _ = run("delete_collection", lambda: client.delete_collection(name))
        if ok:
            del live[name]
            del expected[name]
        continue
    name = rng.choice(sorted(live))
    col = live[name]
    roll = rng.random()
    if roll < 0.4:
        new = [f"r{next_id + k}" for k in range(rng.randint(1, 3))]
        next_id += len(new)
        ok, _ = run("add", lambda: col.add(ids=new, embeddings=[vec() for _ in new],
                                            documents=[f"doc {x}" for x in new], metadatas=[{"v": 0} for _ in new]))
        if ok:
            expected[name].update(new)
    elif roll < 0.6:
        pool = sorted(expected[name])
        target = rng.sample(pool, min(len(pool), 2)) + [f"r{next_id}"]
        next_id += 1
        ok, _ = run("upsert", lambda: col.upsert(ids=target, embeddings=[vec() for _ in target],
                                                  documents=[f"up {x} {i}" for x in target], metadatas=[{"v": i} for _ in target]))
        if ok:
            expected[name].update(target)
    elif roll < 0.8:
        pool = sorted(expected[name])
        if pool:
            target = rng.sample(pool, min(len(pool), 2))
            run("update", lambda: col.update(ids=target, metadatas=[{"v": -i} for _ in target]))
    else:
        pool = sorted(expected[name])
        if pool:
            target = rng.sample(pool, 1)
            ok, _ = run("delete", lambda: col.delete(ids=target))
            if ok:
                expected[name].difference_update(target)

# The ids clients got must never change, whoever created the collection.
stable = True
for n in live:
    ok, got = run("get_collection", lambda: client.get_collection(n, embedding_function=None))
    stable = stable and ok and str(got.id) == ids_of[n]
print(json.dumps({
    "ops": ops,
    "failures": failures,
    "collections": {n: ids_of[n] for n in live},
    "expected": {n: sorted(v) for n, v in expected.items()},
    "ids_stable": stable,
    "slowest_seconds": slowest,
}))
