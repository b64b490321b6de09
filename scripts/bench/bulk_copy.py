"""A direct bulk copy of one collection from one Chroma to another with the official client, as
seeding does it (every id listed, then records read by id and upserted in pages of 1,000):
the reference for seeding's throughput.

usage: copy.py SOURCE_URL TARGET_URL NAME
Prints one JSON line: {"records", "seconds", "records_per_second"}.
"""
import json
import sys
import time
from urllib.parse import urlparse

import chromadb


def client(url):
    parsed = urlparse(url)
    return chromadb.HttpClient(host=parsed.hostname, port=parsed.port,
                               settings=chromadb.Settings(anonymized_telemetry=False))


source, target, name = sys.argv[1], sys.argv[2], sys.argv[3]
a = client(source).get_collection(name, embedding_function=None)
started = time.monotonic()
b = client(target).create_collection(name, metadata=a.metadata, embedding_function=None)
ids = []
while True:
    page = a.get(include=[], limit=1000, offset=len(ids))["ids"]
    ids.extend(page)
    if len(page) < 1000:
        break
for start in range(0, len(ids), 1000):
    got = a.get(ids=ids[start:start + 1000], include=["embeddings", "documents", "metadatas"])
    b.upsert(ids=got["ids"], embeddings=got["embeddings"], documents=got["documents"],
             metadatas=got["metadatas"])
seconds = time.monotonic() - started
assert b.count() == len(ids), (b.count(), len(ids))
print(json.dumps({"records": len(ids), "seconds": round(seconds, 2),
                  "records_per_second": round(len(ids) / seconds, 1)}))
