"""Fills one Chroma instance straight, as an existing deployment would be, with the official client.

usage: seed_data.py INSTANCE_URL [SCALE]

Creates three collections in the default database: `docs` (1,000 records) and `notes` (700),
with documents and metadata, and `vectors` (300) with cosine space and custom HNSW settings;
SCALE multiplies the record counts. Records are deterministic (8-d embeddings). Prints one JSON
line: {name: count}.
"""
import json
import random
import sys

from chroma_client import client_for

url = sys.argv[1]
scale = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
client = client_for(url)
rng = random.Random(13)


def fill(collection, n, prefix):
    for start in range(0, n, 250):
        ids = [f"{prefix}-{i:05d}" for i in range(start, min(n, start + 250))]
        collection.add(
            ids=ids,
            embeddings=[[rng.random() for _ in range(8)] for _ in ids],
            documents=[f"{prefix} document {i}" for i in ids],
            metadatas=[{"source": prefix, "n": i, "even": k % 2 == 0} for k, i in enumerate(ids)],
        )


counts = {"docs": int(1000 * scale), "notes": int(700 * scale), "vectors": int(300 * scale)}
fill(client.create_collection("docs", metadata={"owner": "adopt", "kind": "docs"}), counts["docs"], "d")
fill(client.create_collection("notes", metadata={"owner": "adopt"}), counts["notes"], "n")
vectors = client.create_collection(
    "vectors",
    metadata={"owner": "adopt", "kind": "vectors"},
    configuration={"hnsw": {"space": "cosine", "ef_construction": 150, "max_neighbors": 24, "ef_search": 120}},
)
fill(vectors, counts["vectors"], "v")
print(json.dumps(counts))
