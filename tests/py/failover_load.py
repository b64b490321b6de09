"""A loop of writes and reads through the proxy with the official client, counting failures.

usage: failover_load.py PROXY_URL ITERATIONS PREFIX
Each iteration creates collection PREFIX-i (a write) and reads the collection `seed` by name and
the collection count (reads). `seed` must exist on every instance. Prints one JSON line.
"""
import json
import sys
import time

from chroma_client import client_for

proxy_url, iterations, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
client = client_for(proxy_url)
writes = reads = 0
failures = []
slowest = 0.0
for i in range(iterations):
    for kind, call in (
        ("write", lambda: client.create_collection(f"{prefix}-{i}", embedding_function=None)),
        ("read", lambda: client.get_collection("seed", embedding_function=None)),
        ("read", lambda: client.count_collections()),
    ):
        started = time.monotonic()
        try:
            call()
            if kind == "write":
                writes += 1
            else:
                reads += 1
        except Exception as e:  # every failure is reported, none is retried
            failures.append(f"{kind} {i}: {type(e).__name__}: {e}")
        slowest = max(slowest, time.monotonic() - started)
    print(f"progress {i + 1}", flush=True)
print(json.dumps({"writes": writes, "reads": reads, "failures": failures, "slowest_seconds": slowest}))
