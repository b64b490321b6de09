"""Writes through the proxy into an existing collection while it is being seeded, with the
official client, keeping an oracle of what the collection must end as.

usage: seed_writer.py PROXY_URL COLLECTION ITERATIONS

Each iteration adds a new record, upserts an existing one with a new document, or deletes one.
Prints one JSON line: {"ops", "failures", "expected": {id: document}}.
"""
import json
import random
import sys

from chroma_client import client_for

url, name, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
rng = random.Random(11)
collection = client_for(url).get_collection(name)
got = collection.get(include=["documents"])
expected = dict(zip(got["ids"], got["documents"]))
failures = []
ops = 0
for i in range(iterations):
    op = rng.choice(["add", "upsert", "delete"])
    try:
        if op == "add":
            rid = f"w-{i:05d}"
            collection.add(ids=[rid], embeddings=[[rng.random() for _ in range(8)]], documents=[f"written {i}"])
            expected[rid] = f"written {i}"
        elif op == "upsert":
            rid = rng.choice(sorted(expected))
            collection.upsert(ids=[rid], embeddings=[[rng.random() for _ in range(8)]], documents=[f"upserted {i}"])
            expected[rid] = f"upserted {i}"
        else:
            rid = rng.choice(sorted(expected))
            collection.delete(ids=[rid])
            del expected[rid]
        ops += 1
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failures.append(f"{op} {i}: {type(e).__name__}: {e}")
print(json.dumps({"ops": ops, "failures": failures, "expected": expected}))
