"""Bulk ingest with the official client, and how long a replica takes to catch up.

usage: bulk.py URL NAME N DIM BATCH [--replica URL --primary URL --proxy URL --deadline S
                                     --timeline FILE --pids name=PID,...]

Adds N random DIM-d records (seeded, with documents) to a new collection NAME through URL in
batches of BATCH, and prints one JSON line: seconds, records_per_s, last_ack (epoch seconds of
the last batch's answer).

With --replica (the replica's own URL) and --primary (the primary's own URL), it then polls,
without fixed sleeps, until the replica's copy of NAME has as many records as the primary's
(count_lag: seconds after the last ack), until the proxy (--proxy) owes the replica nothing
(pending_lag), and until a fingerprint matches: every id and document, and the embeddings of
200 sampled ids, equal on both (fingerprint_lag). --deadline bounds the whole wait.

--timeline FILE writes, every 0.25 s during the ingest and every 0.05 s after it, a row of
seconds since the start, records acked, the replica's count, the entries the proxy owes the
replica, and the CPU seconds used so far by each process of --pids (from /proc/PID/stat).
"""
import argparse
import hashlib
import json
import os
import threading
import time
import urllib.request
from urllib.parse import urlparse

import numpy as np

import chromadb

COLL = "/api/v2/tenants/default_tenant/databases/default_database/collections"
TICK = os.sysconf("SC_CLK_TCK")


def client(url):
    u = urlparse(url)
    return chromadb.HttpClient(host=u.hostname, port=u.port,
                               settings=chromadb.Settings(anonymized_telemetry=False))


def get_json(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return json.load(r)
    except Exception:
        return None


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return float("nan")


class Replica:
    """The replica's copy of one collection, read from the replica itself."""

    def __init__(self, url, name):
        self.url, self.name, self.id = url, name, None

    def count(self):
        if self.id is None:
            found = get_json(f"{self.url}{COLL}/{self.name}")
            if not found:
                return 0
            self.id = found["id"]
        n = get_json(f"{self.url}{COLL}/{self.id}/count")
        return n if isinstance(n, int) else 0


def owed(proxy):
    status = get_json(f"{proxy}/status")
    if not status:
        return -1
    for i in status["instances"]:
        if i["name"] == "replica":
            return i["replication_lag"]["entries"]
    return -1


def fingerprint(url, name, sample):
    col = client(url).get_collection(name)
    got = col.get(include=["documents"])
    h = hashlib.sha256()
    for i, d in sorted(zip(got["ids"], got["documents"])):
        h.update(f"{i}\0{d}\0".encode())
    emb = col.get(ids=sample, include=["embeddings"])
    order = np.argsort(emb["ids"])
    h.update(np.asarray(emb["embeddings"], dtype=np.float32)[order].tobytes())
    return h.hexdigest()


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
    ap.add_argument("--deadline", type=float, default=300)
    ap.add_argument("--timeline")
    ap.add_argument("--pids", default="")
    a = ap.parse_args()
    pids = dict(p.split("=") for p in a.pids.split(",") if p)

    rng = np.random.default_rng(42)
    embeddings = rng.random((a.n, a.dim), dtype=np.float32)
    ids = [f"r{i}" for i in range(a.n)]
    documents = [f"document {i} of the bulk bench" for i in range(a.n)]
    col = client(a.url).create_collection(a.name, embedding_function=None)

    replica = Replica(a.replica, a.name) if a.replica else None
    acked = [0]
    done = threading.Event()
    rows = []
    start = time.time()

    def sample():
        while True:
            after = done.is_set()
            row = [round(time.time() - start, 3), acked[0]]
            if replica:
                row += [replica.count(), owed(a.proxy) if a.proxy else -1]
            row += [round(cpu_seconds(p), 2) for p in pids.values()]
            rows.append(row)
            if after and stop.is_set():
                return
            time.sleep(0.05 if after else 0.25)

    stop = threading.Event()
    sampler = threading.Thread(target=sample, daemon=True) if a.timeline else None
    if sampler:
        sampler.start()

    for s in range(0, a.n, a.batch):
        col.add(ids=ids[s:s + a.batch], embeddings=embeddings[s:s + a.batch],
                documents=documents[s:s + a.batch])
        acked[0] = min(a.n, s + a.batch)
    last_ack = time.time()
    done.set()
    out = {"seconds": round(last_ack - start, 3), "records_per_s": round(a.n / (last_ack - start), 1),
           "last_ack": last_ack}

    if replica:
        primary = Replica(a.primary, a.name)
        target = primary.count()
        deadline = last_ack + a.deadline
        out["primary_count"] = target
        while replica.count() != target and time.time() < deadline:
            time.sleep(0.02)
        out["count_lag"] = round(time.time() - last_ack, 3)
        out["replica_count"] = replica.count()
        if a.proxy:
            while owed(a.proxy) != 0 and time.time() < deadline:
                time.sleep(0.02)
            out["pending_lag"] = round(time.time() - last_ack, 3)
        sample_ids = [ids[int(i)] for i in np.random.default_rng(7).choice(a.n, 200, replace=False)]
        want = fingerprint(a.primary, a.name, sample_ids)
        match = False
        while time.time() < deadline:
            if fingerprint(a.replica, a.name, sample_ids) == want:
                match = True
                break
            time.sleep(0.1)
        out["fingerprint_match"] = match
        out["fingerprint_lag"] = round(time.time() - last_ack, 3)
    stop.set()
    if sampler:
        sampler.join()
        with open(a.timeline, "w") as f:
            f.write("\t".join(["t", "acked"] + (["replica", "owed"] if replica else []) + [f"cpu_{p}" for p in pids]) + "\n")
            for row in rows:
                f.write("\t".join(map(str, row)) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
