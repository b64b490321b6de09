"""Shared helpers for the test scripts: an official chromadb.HttpClient for a URL."""
from urllib.parse import urlparse

import chromadb


def client_for(url: str) -> "chromadb.api.ClientAPI":
    parsed = urlparse(url)
    return chromadb.HttpClient(
        host=parsed.hostname,
        port=parsed.port,
        settings=chromadb.Settings(anonymized_telemetry=False),
    )
