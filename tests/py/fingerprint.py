"""Every collection straight from one Chroma instance: ids, documents, metadatas, embeddings.

usage: fingerprint.py INSTANCE_URL
Prints one JSON line {name: {"ids": [...], "documents": [...], "metadatas": [...],
"embeddings": [...]}}, records sorted by id, embeddings rounded to 5 decimals. A collection
that disappears while it is read (replay is still applying a delete) is marked "unsettled", so
the caller sees a difference and reads again.
"""
import json
import sys

from chroma_client import client_for

client = client_for(sys.argv[1])
out = {}
collections = client.list_collections()
for col in collections:
    try:
        got = col.get(include=["documents", "metadatas", "embeddings"])
    except Exception as e:  # deleted by replay since the listing: not settled yet
        out[col.name] = {"unsettled": f"{type(e).__name__}: {e}"}
        continue
    rows = sorted(zip(got["ids"], got["documents"], got["metadatas"],
                      [[round(float(x), 5) for x in e] for e in got["embeddings"]]))
    out[col.name] = {
        "ids": [r[0] for r in rows],
        "documents": [r[1] for r in rows],
        "metadatas": [r[2] for r in rows],
        "embeddings": [r[3] for r in rows],
    }
print(json.dumps(out, sort_keys=True))
