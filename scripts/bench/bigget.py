"""Gets the whole collection NAME (N records) with embeddings through URL with the official
client and prints the seconds the call took (parsing into numpy included).

usage: bigget.py URL NAME N
"""
import sys
import time
from urllib.parse import urlparse

import chromadb

url, name, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
u = urlparse(url)
col = chromadb.HttpClient(host=u.hostname, port=u.port,
                          settings=chromadb.Settings(anonymized_telemetry=False)).get_collection(name)
start = time.time()
got = col.get(include=["embeddings", "documents"])
took = time.time() - start
assert len(got["ids"]) == n and len(got["embeddings"]) == n, (len(got["ids"]), n)
print(f"{took:.3f}")
