"""How long a replica takes to have what the primary has, for the bench's `bulk` section; used by
bulk.py, and alone after a backlog:

usage: follow.py NAME --expect N --replica URL --primary URL [--proxy URL] [--deadline S] [--since EPOCH]
                 [--timeline FILE --pids name=PID,...]

polls, without fixed sleeps, until the replica's and the primary's copies of collection NAME
both hold N records (count_lag, seconds after --since, default now; first_rise: when the replica's
count first moved), until the proxy owes the replica nothing (pending_lag), and until a
fingerprint matches: every id and document, and the embeddings of 200 sampled ids, equal on
both (fingerprint_lag). Prints them as one JSON line.
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


class Copy:
    """One instance's copy of one collection, read from the instance itself."""

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
    """Entries the proxy owes the instance named replica (-1 when /status does not answer)."""
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


class Timeline:
    """Samples, in a thread, seconds since `start`, what `progress()` says (records acked),
    the replica's count, what the proxy owes it, and the CPU seconds of each of `pids`: every
    0.25 s until fast() is called, then every 0.05 s until stop()."""

    def __init__(self, start, replica, proxy, pids, progress=lambda: -1):
        self.start, self.replica, self.proxy, self.pids, self.progress = start, replica, proxy, pids, progress
        self.rows, self._fast, self._stop = [], threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            row = [round(time.time() - self.start, 3), self.progress(), self.replica.count(),
                   owed(self.proxy) if self.proxy else -1]
            row += [round(cpu_seconds(p), 2) for p in self.pids.values()]
            self.rows.append(row)
            time.sleep(0.05 if self._fast.is_set() else 0.25)

    def fast(self):
        self._fast.set()

    def stop(self, path):
        self._stop.set()
        self.thread.join()
        with open(path, "w") as f:
            f.write("\t".join(["t", "acked", "replica", "owed"] + [f"cpu_{p}" for p in self.pids]) + "\n")
            for row in self.rows:
                f.write("\t".join(map(str, row)) + "\n")


def follow(name, replica_url, primary_url, proxy, since, deadline, sample_ids, expect):
    """Waits for both copies of `name` to hold `expect` records (the primary's too: a batch
    that failed over to the replica reaches the primary by replay) and to match; the lags, as a
    dict."""
    replica, primary = Copy(replica_url, name), Copy(primary_url, name)
    out = {}
    end = since + deadline
    first = replica.count()
    while replica.count() == first and first != expect and time.time() < end:
        time.sleep(0.02)
    out["first_rise"] = round(time.time() - since, 3)
    while (replica.count() != expect or primary.count() != expect) and time.time() < end:
        time.sleep(0.02)
    out["count_lag"] = round(time.time() - since, 3)
    out["replica_count"], out["primary_count"] = replica.count(), primary.count()
    if proxy:
        while owed(proxy) != 0 and time.time() < end:
            time.sleep(0.02)
        out["pending_lag"] = round(time.time() - since, 3)
    want = fingerprint(primary_url, name, sample_ids)
    match = False
    while time.time() < end:
        if fingerprint(replica_url, name, sample_ids) == want:
            match = True
            break
        time.sleep(0.1)
    out["fingerprint_match"] = match
    out["fingerprint_lag"] = round(time.time() - since, 3)
    return out


def sample_of(n):
    """The ids whose embeddings the fingerprint compares (bulk.py names records r0, r1, ...)."""
    return [f"r{int(i)}" for i in np.random.default_rng(7).choice(n, min(n, 200), replace=False)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("name")
    ap.add_argument("--replica", required=True)
    ap.add_argument("--primary", required=True)
    ap.add_argument("--proxy")
    ap.add_argument("--deadline", type=float, default=600)
    ap.add_argument("--since", type=float)
    ap.add_argument("--expect", type=int, required=True, help="records the collection holds")
    ap.add_argument("--timeline")
    ap.add_argument("--pids", default="")
    a = ap.parse_args()
    since = a.since or time.time()
    pids = dict(p.split("=") for p in a.pids.split(",") if p)
    timeline = Timeline(since, Copy(a.replica, a.name), a.proxy, pids) if a.timeline else None
    if timeline:
        timeline.fast()
    out = follow(a.name, a.replica, a.primary, a.proxy, since, a.deadline, sample_of(a.expect), a.expect)
    if timeline:
        timeline.stop(a.timeline)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
