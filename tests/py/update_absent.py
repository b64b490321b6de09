"""Updates of absent ids, then adds of those ids with reads in between, through the proxy: every
instance must serve each record's own document and embedding (Chroma 1.5.9 re-applies its log
to the vector index after a read, so an update of an absent id sent to it would later land on
the added record). Chroma still refuses an update of absent ids whose embeddings do not fit
the collection, and so must the proxy, which sends Chroma none of those ids. argv: proxy URL,
then each instance's URL. Prints {"ok": true}.
"""
import json
import sys
import time
import urllib.error
import urllib.request

import chromadb.errors

from chroma_client import client_for

proxy_url, instance_urls = sys.argv[1], sys.argv[2:]
col = client_for(proxy_url).create_collection("update-absent", embedding_function=None)
ids = [str(i) for i in range(1, 6)]
for i in ids:
    col.update(ids=[i], embeddings=[[float(i), 1.0, 1.0]], documents=[f"{i}:update"])
for i in ids:
    col.add(ids=[i], embeddings=[[float(i), 2.0, 1.0]], documents=[f"{i}:add"])
    col.get(ids=[i])
col.add(ids=["99"], embeddings=[[99.0, 3.0, 1.0]], documents=["99:add"])
col.get()
col.count()

# The collection's dimension is 3 now: an update of absent ids with 4 is refused, as direct.
try:
    col.update(ids=["absent-1", "absent-2"], embeddings=[[1.0, 2.0, 3.0, 4.0]] * 2)
    raise AssertionError("an update of absent ids with the wrong dimension was accepted")
except chromadb.errors.InvalidArgumentError as e:
    assert str(e) == "Collection expecting embedding with dimension of 3, got 4", str(e)
# Embeddings of two lengths, one of them for a present id: refused whole, as direct (sent as
# raw JSON, which the official client would have refused itself).
request = urllib.request.Request(
    f"{proxy_url}/api/v2/tenants/default_tenant/databases/default_database/collections/{col.id}/update",
    data=json.dumps({"ids": ["1", "absent-3"], "embeddings": [[9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]]}).encode(),
    headers={"content-type": "application/json"},
)
try:
    urllib.request.urlopen(request)
    raise AssertionError("an update with embeddings of two lengths was accepted")
except urllib.error.HTTPError as e:
    assert e.code == 400, e.code
    error = json.loads(e.read())
    assert error == {"error": "InvalidArgumentError", "message": "Inconsistent dimensions in provided embeddings"}, error

expected = {i: ([float(i), 2.0, 1.0], f"{i}:add") for i in ids}
expected["99"] = ([99.0, 3.0, 1.0], "99:add")

for url in instance_urls:
    direct = client_for(url).get_collection("update-absent", embedding_function=None)
    deadline = time.time() + 30
    while direct.count() < len(expected) and time.time() < deadline:
        time.sleep(0.1)
    got = direct.get(include=["embeddings", "documents"])
    held = {
        rid: ([float(x) for x in emb], doc)
        for rid, emb, doc in zip(got["ids"], got["embeddings"], got["documents"])
    }
    assert held == expected, (url, held)
print(json.dumps({"ok": True}))
