"""A big collection, read whole through the proxy and straight from its instance with the
official client (tests/big_answers.rs).

usage: big_answers.py fill URL NAME COUNT DIM
         creates NAME straight on the instance at URL and adds COUNT records (ids r-00000, ...)
         with deterministic DIM-dimensional embeddings, in the largest batches it takes.
       big_answers.py get PROXY_URL DIRECT_URL NAME COUNT DIM
         gets every record with its embedding direct, through the proxy, then direct again, and
         checks that the proxy's ids are the direct ones and that a sample of its embeddings are
         both the direct ones and the ones that were added.
Prints one JSON line (timings in seconds); any failed check raises (non-zero exit).
"""
import json
import sys
import time

import numpy as np

from chroma_client import client_for

SEED = 17
SAMPLE_EVERY = 997


def embeddings(count: int, dim: int) -> np.ndarray:
    """The embeddings of records 0..count: the same on every run."""
    return np.random.default_rng(SEED).random((count, dim), dtype=np.float32)


def fill(url: str, name: str, count: int, dim: int) -> dict:
    client = client_for(url)
    col = client.create_collection(name, embedding_function=None)
    data = embeddings(count, dim)
    batch = min(client.get_max_batch_size(), 5000)
    started = time.perf_counter()
    for start in range(0, count, batch):
        end = min(start + batch, count)
        col.add(ids=[f"r-{i:05}" for i in range(start, end)], embeddings=data[start:end])
    assert col.count() == count, col.count()
    return {"ok": True, "fill_seconds": time.perf_counter() - started, "batch": batch}


def get_all(url: str, name: str):
    col = client_for(url).get_collection(name, embedding_function=None)
    started = time.perf_counter()
    got = col.get(include=["embeddings"])
    return got, time.perf_counter() - started


def get(proxy_url: str, direct_url: str, name: str, count: int, dim: int) -> dict:
    _, direct_cold = get_all(direct_url, name)
    through, proxy_seconds = get_all(proxy_url, name)
    direct, direct_seconds = get_all(direct_url, name)
    assert len(through["ids"]) == count, len(through["ids"])
    assert through["ids"] == direct["ids"], "the proxy's ids differ from the direct ones"
    expected = embeddings(count, dim)
    sampled = 0
    for k in range(0, count, SAMPLE_EVERY):
        record = int(through["ids"][k][2:])
        assert np.array_equal(through["embeddings"][k], direct["embeddings"][k]), k
        # Stored and answered as float32; the client parses the answer's text into float64.
        got = np.asarray(through["embeddings"][k], dtype=np.float32)
        assert np.array_equal(got, expected[record]), k
        sampled += 1
    return {
        "ok": True,
        "count": count,
        "sampled": sampled,
        "proxy_seconds": proxy_seconds,
        "direct_seconds": direct_seconds,
        "direct_cold_seconds": direct_cold,
    }


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "fill":
        result = fill(args[0], args[1], int(args[2]), int(args[3]))
    else:
        result = get(args[0], args[1], args[2], int(args[3]), int(args[4]))
    print(json.dumps(result))
