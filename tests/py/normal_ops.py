"""Normal operation through the proxy with the official client, checked on the primary directly.

usage: normal_ops.py PROXY_URL PRIMARY_URL COLLECTION_NAME [--ca CA_FILE] [--keep]
With --ca, the proxy is reached over HTTPS and its certificate verified against CA_FILE. With
--keep, the collection and its records are left for the caller to compare on the instances.
Prints one JSON line {"ok", "collection_id", "ids": ids left}; any failed check raises
(non-zero exit).
"""
import argparse
import json

from chroma_client import client_for

parser = argparse.ArgumentParser()
parser.add_argument("proxy_url")
parser.add_argument("primary_url")
parser.add_argument("name")
parser.add_argument("--ca")
parser.add_argument("--keep", action="store_true")
args = parser.parse_args()
proxy_url, primary_url, name = args.proxy_url, args.primary_url, args.name
proxy = client_for(proxy_url, args.ca)
primary = client_for(primary_url)

col = proxy.create_collection(name, embedding_function=None, metadata={"purpose": "normal-ops"})
ids = [f"id-{i}" for i in range(20)]
col.add(
    ids=ids,
    embeddings=[[float(i), float(i % 3), 1.0] for i in range(20)],
    documents=[f"document {i}" for i in range(20)],
    metadatas=[{"i": i} for i in range(20)],
)
assert col.count() == 20, col.count()
direct = primary.get_collection(name, embedding_function=None)
assert direct.count() == 20, f"primary holds {direct.count()} records"

hits = col.query(query_embeddings=[[5.0, 2.0, 1.0]], n_results=3, include=["documents", "distances"])
assert hits["ids"][0][0] == "id-5", hits["ids"]
assert hits["documents"][0][0] == "document 5", hits["documents"]

got = col.get(ids=["id-3", "id-7"], include=["documents", "metadatas"])
pairs = sorted(zip(got["ids"], got["documents"], [m["i"] for m in got["metadatas"]]))
assert pairs == [("id-3", "document 3", 3), ("id-7", "document 7", 7)], pairs

col.delete(ids=["id-3", "id-7"])
assert col.count() == 18, col.count()
assert col.get(ids=["id-3"])["ids"] == []
assert direct.count() == 18, f"primary holds {direct.count()} records after delete"

again = proxy.get_collection(name, embedding_function=None)
assert again.id == col.id, (again.id, col.id)
left = sorted(col.get()["ids"])

if not args.keep:
    proxy.delete_collection(name)
    assert name not in [c.name for c in proxy.list_collections()]
    assert name not in [c.name for c in primary.list_collections()]
print(json.dumps({"ok": True, "collection_id": str(col.id), "ids": left}))
