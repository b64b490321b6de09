"""Creates collection NAME with N random DIM-d records on the Chroma at URL; prints its id and
writes a query body (one random DIM-d vector, 10 results) to QUERY_FILE.

usage: seed.py URL NAME N DIM QUERY_FILE
"""
import json
import random
import sys
from urllib.parse import urlparse

import chromadb

url, name, n, dim, query_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
parsed = urlparse(url)
client = chromadb.HttpClient(host=parsed.hostname, port=parsed.port,
                             settings=chromadb.Settings(anonymized_telemetry=False))
rng = random.Random(42)
col = client.get_or_create_collection(name, embedding_function=None)
for start in range(0, n, 500):
    ids = [f"r{i}" for i in range(start, min(n, start + 500))]
    col.upsert(ids=ids, embeddings=[[rng.random() for _ in range(dim)] for _ in ids],
               documents=[f"doc {i}" for i in ids])
assert col.count() == n, col.count()
with open(query_file, "w") as f:
    json.dump({"query_embeddings": [[rng.random() for _ in range(dim)]], "n_results": 10,
               "include": ["distances"]}, f)
print(col.id)
