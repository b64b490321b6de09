"""Shared helpers for the test scripts: an official chromadb.HttpClient for a URL."""
from urllib.parse import urlparse

import chromadb


def client_for(url: str, ca_file: "str | None" = None) -> "chromadb.api.ClientAPI":
    """A client for `http://host:port`, or for `https://host:port` verified against the PEM
    bundle `ca_file` (the client's own `chroma_server_ssl_verify` setting)."""
    parsed = urlparse(url)
    settings = chromadb.Settings(anonymized_telemetry=False)
    if ca_file is not None:
        settings.chroma_server_ssl_verify = ca_file
    return chromadb.HttpClient(
        host=parsed.hostname,
        port=parsed.port,
        ssl=parsed.scheme == "https",
        settings=settings,
    )
