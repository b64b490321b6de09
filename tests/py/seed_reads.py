"""Reads through the proxy while it seeds an instance, each compared with the same read made
straight on the source, with the official client.

usage: seed_reads.py PROXY_URL SOURCE_URL INSTANCE

Loops over the collections of seed_data.py: count, a get of sampled ids with documents and
metadatas, and a 3-nearest query, through the proxy and straight on the source. Stops one
round after the proxy's /status shows INSTANCE serving (or after 180 s). Prints one JSON line:
{"rounds", "rounds_while_seeding", "wrong": [first differences]}.
"""
import json
import random
import sys
import time
import urllib.request

from chroma_client import client_for

proxy_url, source_url, instance = sys.argv[1], sys.argv[2], sys.argv[3]
proxied, direct = client_for(proxy_url), client_for(source_url)
rng = random.Random(5)
names = ["docs", "notes", "vectors"]
prefix = {"docs": "d", "notes": "n", "vectors": "v"}


def state():
    with urllib.request.urlopen(proxy_url + "/status", timeout=10) as answer:
        status = json.load(answer)
    return next(i["state"] for i in status["instances"] if i["name"] == instance)


def one_round(wrong):
    for name in names:
        p, d = proxied.get_collection(name), direct.get_collection(name)
        if p.count() != d.count():
            wrong.append(f"{name}: count {p.count()} through the proxy, {d.count()} on the source")
        n = d.count()
        ids = [f"{prefix[name]}-{rng.randrange(n):05d}" for _ in range(5)]
        pg, dg = p.get(ids=ids, include=["documents", "metadatas"]), d.get(ids=ids, include=["documents", "metadatas"])
        if sorted(zip(pg["ids"], pg["documents"])) != sorted(zip(dg["ids"], dg["documents"])):
            wrong.append(f"{name}: get {ids}: {pg['ids']} through the proxy, {dg['ids']} on the source")
        q = [[rng.random() for _ in range(8)]]
        pq, dq = p.query(query_embeddings=q, n_results=3), d.query(query_embeddings=q, n_results=3)
        if pq["ids"] != dq["ids"]:
            wrong.append(f"{name}: query: {pq['ids']} through the proxy, {dq['ids']} on the source")


rounds = while_seeding = 0
wrong = []
deadline = time.monotonic() + 180
while time.monotonic() < deadline:
    seeding = state() != "healthy"
    one_round(wrong)
    rounds += 1
    while_seeding += seeding
    if not seeding:
        break
print(json.dumps({"rounds": rounds, "rounds_while_seeding": while_seeding, "wrong": wrong[:20]}))
