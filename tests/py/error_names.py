"""The proxy's own errors, as the official client sees them: each raw answer is passed through
the client's own error mapping (`BaseHTTPClient._raise_chroma_error`) and the exception class is
reported; then Chroma's `test_multithreaded_get_or_create` runs through the proxy.

argv: proxy URL, admin token. Prints one JSON object: condition -> exception class name, plus
"names": the error names the client knows, and "multithreaded": "ok" or the failure.
"""
import json
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from chromadb.api.base_http_client import BaseHTTPClient
from chromadb.errors import ChromaError, error_types

from chroma_client import client_for

url, admin_token = sys.argv[1], sys.argv[2]
db = f"{url}/api/v2/tenants/default_tenant/databases/default_database"
http = httpx.Client(timeout=30)


def raised(resp: httpx.Response) -> str:
    try:
        BaseHTTPClient._raise_chroma_error(resp)
    except Exception as e:  # noqa: BLE001: the class is what is reported
        return type(e).__name__
    return f"no error ({resp.status_code})"


client = client_for(url)
protected = client.get_or_create_collection("global")
missing = str(uuid.uuid4())
conditions = {
    "unknown collection id": http.get(f"{db}/collections/{missing}/count"),
    "malformed collection id": http.get(f"{db}/collections/not-a-uuid/count"),
    "unknown write route": http.post(f"{url}/api/v2/not-a-route", json={}),
    "body too large": http.post(
        f"{db}/collections", content=b"x" * (41 * 1024 * 1024),
        headers={"content-type": "application/json"},
    ),
    "protected collection": http.delete(f"{db}/collections/global"),
    "admin without token": http.get(f"{url}/admin/instances"),
    "admin with a wrong token": http.get(
        f"{url}/admin/instances", headers={"authorization": "Bearer wrong"}
    ),
    "bad admin body": http.post(
        f"{url}/admin/instances/primary/health", content=b"{",
        headers={"authorization": f"Bearer {admin_token}"},
    ),
}
key = {"idempotency-key": f"k-{uuid.uuid4()}"}
body = {"ids": ["a"], "embeddings": [[1.0, 2.0]]}
first = http.post(f"{db}/collections/{protected.id}/add", json=body, headers=key)
assert first.is_success, (first.status_code, first.text)
conditions["idempotency key reused"] = http.post(
    f"{db}/collections/{protected.id}/add", json={**body, "ids": ["b"]}, headers=key
)
result = {name: raised(resp) for name, resp in conditions.items()}
result["names"] = sorted(error_types)


def create_maybe_delete_collection(name: str, i: int) -> None:
    # Chroma's own test_multithreaded_get_or_create (chromadb/test/api/test_collection.py).
    try:
        coll = client.get_or_create_collection(name)
        assert coll.name == name
    except ChromaError as e:
        if "concurrent" not in e.message():
            raise e
    try:
        if i % 2 == 0:
            client.delete_collection(name)
    except ChromaError as e:
        if "does not exist" not in e.message():
            raise e


try:
    name = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=50) as executor:
        for future in [executor.submit(create_maybe_delete_collection, name, i) for i in range(50)]:
            future.result()
    result["multithreaded"] = "ok"
except Exception as e:  # noqa: BLE001
    result["multithreaded"] = f"{type(e).__name__}: {e}"
print(json.dumps(result))
