"""Every collection straight from one Chroma instance: ids, documents, metadatas, embeddings.

usage: fingerprint.py INSTANCE_URL [--deep] [TENANT ...]
Prints one JSON line {name: {"ids": [...], "documents": [...], "metadatas": [...],
"embeddings": [...]}}, records sorted by id, embeddings rounded to 5 decimals. A collection
that disappears while it is read (replay is still applying a delete) is marked "unsettled", so
the caller sees a difference and reads again.

With --deep, each collection also carries its own "metadata". Each TENANT named adds
"tenant TENANT": its sorted database names (null when the tenant does not exist), and every
collection of those databases under "TENANT/DATABASE/NAME".
"""
import json
import sys
import urllib.error
import urllib.request
from urllib.parse import urlparse

import chromadb

from chroma_client import client_for

url = sys.argv[1]
deep = "--deep" in sys.argv[2:]
tenants = [a for a in sys.argv[2:] if a != "--deep"]


def collections_of(client, prefix, out):
    for col in client.list_collections():
        key = prefix + col.name
        try:
            got = col.get(include=["documents", "metadatas", "embeddings"])
        except Exception as e:  # deleted by replay since the listing: not settled yet
            out[key] = {"unsettled": f"{type(e).__name__}: {e}"}
            continue
        rows = sorted(zip(got["ids"], got["documents"], got["metadatas"],
                          [[round(float(x), 5) for x in e] for e in got["embeddings"]]))
        out[key] = {
            "ids": [r[0] for r in rows],
            "documents": [r[1] for r in rows],
            "metadatas": [r[2] for r in rows],
            "embeddings": [r[3] for r in rows],
        }
        if deep:
            out[key]["metadata"] = col.metadata


def get_json(path):
    try:
        with urllib.request.urlopen(url + path, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return None
        raise


out = {}
collections_of(client_for(url), "", out)
parsed = urlparse(url)
for tenant in tenants:
    if get_json(f"/api/v2/tenants/{tenant}") is None:
        out[f"tenant {tenant}"] = None
        continue
    databases = sorted(d["name"] for d in get_json(f"/api/v2/tenants/{tenant}/databases"))
    out[f"tenant {tenant}"] = databases
    for database in databases:
        client = chromadb.HttpClient(
            host=parsed.hostname, port=parsed.port, tenant=tenant, database=database,
            settings=chromadb.Settings(anonymized_telemetry=False))
        collections_of(client, f"{tenant}/{database}/", out)
print(json.dumps(out, sort_keys=True))
