"""The official client with token auth through the proxy, checked on the primary directly.

usage: auth_client.py PROXY_URL PRIMARY_URL READ_TOKEN WRITE_TOKEN TENANT_TOKEN ADMIN_TOKEN
  READ_TOKEN: role read, tenant default_tenant, databases ["*"]
  WRITE_TOKEN: role write, tenant default_tenant, databases ["*"]
  TENANT_TOKEN: role write, tenant acme, databases ["sales"] (acme/sales and other/sales exist)
  ADMIN_TOKEN: role admin, tenant *, databases ["*"]
Prints one JSON line; any failed check raises (non-zero exit).
"""
import json
import sys
from urllib.parse import urlparse

import chromadb
from chromadb.errors import AuthorizationError, ChromaAuthError

from chroma_client import client_for

proxy_url, primary_url, read_token, write_token, tenant_token, admin_token = sys.argv[1:7]
parsed = urlparse(proxy_url)
primary = client_for(primary_url)


def client(token, header="Authorization", overwrite=False, **kwargs):
    settings = chromadb.Settings(
        anonymized_telemetry=False,
        allow_reset=True,
        chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
        chroma_client_auth_credentials=token,
        chroma_auth_token_transport_header=header,
        chroma_overwrite_singleton_tenant_database_access_from_auth=overwrite,
    )
    return chromadb.HttpClient(host=parsed.hostname, port=parsed.port, settings=settings, **kwargs)


def raises(error, what, action):
    try:
        action()
    except error:
        return
    raise AssertionError(f"{what}: expected {error.__name__}")


# A write token does the whole workflow, over each of the two header transports.
for header in ["Authorization", "X-Chroma-Token"]:
    name = f"auth-{header.lower()}"
    writer = client(write_token, header)
    identity = writer.get_user_identity()
    assert identity.user_id == "writer" and identity.tenant == "default_tenant", identity
    col = writer.create_collection(name, embedding_function=None)
    col.add(
        ids=[f"id-{i}" for i in range(10)],
        embeddings=[[float(i), 1.0, 0.0] for i in range(10)],
        documents=[f"doc {i}" for i in range(10)],
    )
    hits = col.query(query_embeddings=[[3.0, 1.0, 0.0]], n_results=1)
    assert hits["ids"][0] == ["id-3"], hits
    col.delete(ids=["id-9"])
    assert col.count() == 9, col.count()
    direct = primary.get_collection(name, embedding_function=None)
    assert direct.count() == 9, f"{header}: the primary holds {direct.count()}"

# Without a token: the client's usual authentication error, on connect.
raises(ChromaAuthError, "no token", lambda: chromadb.HttpClient(
    host=parsed.hostname, port=parsed.port,
    settings=chromadb.Settings(anonymized_telemetry=False)).heartbeat())
raises(ChromaAuthError, "unknown token", lambda: client("not-a-declared-token-0123").heartbeat())

# A read token reads; its writes and reset are refused and reach nothing.
reader = client(read_token)
col = reader.get_collection("auth-authorization", embedding_function=None)
assert col.count() == 9
assert col.get(ids=["id-1"])["documents"] == ["doc 1"]
raises(AuthorizationError, "read add",
       lambda: col.add(ids=["x"], embeddings=[[0.0, 0.0, 1.0]], documents=["x"]))
raises(AuthorizationError, "read delete", lambda: col.delete(ids=["id-1"]))
raises(AuthorizationError, "read create", lambda: reader.create_collection("nope"))
raises(AuthorizationError, "read reset", lambda: reader.reset())
assert primary.get_collection("auth-authorization", embedding_function=None).count() == 9
assert "nope" not in [c.name for c in primary.list_collections()]

# write may not reset.
raises(AuthorizationError, "write reset", lambda: client(write_token).reset())

# A tenant's token: the overwrite setting gives the client its tenant and database from
# auth/identity, and it works there without naming them; another tenant is refused.
scoped = client(tenant_token, overwrite=True)
assert scoped.tenant == "acme" and scoped.database == "sales", (scoped.tenant, scoped.database)
mine = scoped.create_collection("leads", embedding_function=None)
mine.add(ids=["a"], embeddings=[[1.0, 2.0, 3.0]], documents=["lead a"])
direct_acme = chromadb.HttpClient(
    host=urlparse(primary_url).hostname, port=urlparse(primary_url).port,
    tenant="acme", database="sales", settings=chromadb.Settings(anonymized_telemetry=False))
assert direct_acme.get_collection("leads", embedding_function=None).count() == 1
# The default tenant is not the token's.
raises(AuthorizationError, "default tenant", lambda: client(tenant_token).list_collections())
raises(AuthorizationError, "other tenant's database", lambda: client(
    tenant_token, tenant="other", database="sales").list_collections())

# admin may reset.
client(admin_token).reset()
assert primary.list_collections() == [], primary.list_collections()
print(json.dumps({"ok": True}))
