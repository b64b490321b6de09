"""Bulk ingest with the official client, and how long a replica takes to catch up.

usage: bulk.py URL NAME N DIM BATCH [--replica URL --primary URL --proxy URL --deadline S
                                     --timeline FILE --pids name=PID,...]

Adds N random DIM-d records (seeded, with documents) to a new collection NAME through URL in
batches of BATCH, and prints one JSON line: seconds, records_per_s, last_ack (epoch seconds of
the last batch's answer).

With --replica (the replica's own URL) and --primary (the primary's own URL), it then waits
for the replica to have what the primary has, and adds follow.py's lags, counted from the last
ack. --timeline FILE writes follow.py's timeline, from the first batch: every 0.25 s during the
ingest and every 0.05 s after it.
"""
import argparse
import json
import time

import numpy as np

from follow import Copy, Timeline, client, follow, sample_of


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("name")
    ap.add_argument("n", type=int)
    ap.add_argument("dim", type=int)
    ap.add_argument("batch", type=int)
    ap.add_argument("--replica")
    ap.add_argument("--primary")
    ap.add_argument("--proxy")
    ap.add_argument("--deadline", type=float, default=600)
    ap.add_argument("--timeline")
    ap.add_argument("--pids", default="")
    a = ap.parse_args()
    pids = dict(p.split("=") for p in a.pids.split(",") if p)

    rng = np.random.default_rng(42)
    embeddings = rng.random((a.n, a.dim), dtype=np.float32)
    ids = [f"r{i}" for i in range(a.n)]
    documents = [f"document {i} of the bulk bench" for i in range(a.n)]
    col = client(a.url).create_collection(a.name, embedding_function=None)

    acked = [0]
    start = time.time()
    timeline = None
    if a.timeline and a.replica:
        timeline = Timeline(start, Copy(a.replica, a.name), a.proxy, pids, lambda: acked[0])
    for s in range(0, a.n, a.batch):
        col.add(ids=ids[s:s + a.batch], embeddings=embeddings[s:s + a.batch],
                documents=documents[s:s + a.batch])
        acked[0] = min(a.n, s + a.batch)
    last_ack = time.time()
    out = {"seconds": round(last_ack - start, 3), "records_per_s": round(a.n / (last_ack - start), 1),
           "last_ack": last_ack}
    if timeline:
        timeline.fast()
    if a.replica:
        out.update(follow(a.name, a.replica, a.primary, a.proxy, last_ack, a.deadline, sample_of(a.n), a.n))
    if timeline:
        timeline.stop(a.timeline)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
