"""The official client's normal workflow through the proxy over HTTPS.

usage: tls_client.py PROXY_URL CA_FILE COLLECTION_NAME
The proxy's certificate is verified against CA_FILE. Creates the collection, adds, queries,
gets, updates, upserts and deletes records, and leaves it in place for the caller to compare
on the instances. Prints one JSON line {"ids": sorted ids left, "count": n}; any failed check
raises (non-zero exit).
"""
import json
import sys

from chroma_client import client_for

proxy_url, ca_file, name = sys.argv[1:4]
assert proxy_url.startswith("https://"), proxy_url
client = client_for(proxy_url, ca_file)

col = client.create_collection(name, embedding_function=None, metadata={"purpose": "tls"})
ids = [f"id-{i}" for i in range(30)]
col.add(
    ids=ids,
    embeddings=[[float(i), float(i % 3), 1.0] for i in range(30)],
    documents=[f"document {i}" for i in range(30)],
    metadatas=[{"i": i} for i in range(30)],
)
assert col.count() == 30, col.count()

hits = col.query(query_embeddings=[[5.0, 2.0, 1.0]], n_results=3, include=["documents"])
assert hits["ids"][0][0] == "id-5", hits["ids"]
assert hits["documents"][0][0] == "document 5", hits["documents"]

got = col.get(ids=["id-3", "id-7"], include=["documents", "metadatas"])
pairs = sorted(zip(got["ids"], got["documents"], [m["i"] for m in got["metadatas"]]))
assert pairs == [("id-3", "document 3", 3), ("id-7", "document 7", 7)], pairs

col.update(ids=["id-4"], embeddings=[[4.0, 1.0, 1.0]], documents=["document four"])
assert col.get(ids=["id-4"])["documents"] == ["document four"]
col.upsert(ids=["id-30"], embeddings=[[30.0, 0.0, 1.0]], documents=["document 30"])
col.delete(ids=["id-3", "id-7"])
assert col.count() == 29, col.count()
assert col.get(ids=["id-3"])["ids"] == []

again = client.get_collection(name, embedding_function=None)
assert again.id == col.id, (again.id, col.id)
left = sorted(col.get()["ids"])
print(json.dumps({"ids": left, "count": len(left)}))
