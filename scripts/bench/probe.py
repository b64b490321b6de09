"""How long an instance takes to answer the proxy's health probe while it works, for the bench's
`bulk` section:

usage: probe.py URL OUT

sends GET URL (the primary's /api/v2/healthcheck), one request at a time, each as soon as the
last is answered plus 0.1 s, and appends each answer's time in milliseconds to OUT, one a line,
until it gets SIGTERM. A request that gets no answer in 10 s counts as 10,000 ms.
"""
import signal
import sys
import time
import urllib.request


def main():
    url, out = sys.argv[1], sys.argv[2]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with open(out, "a", buffering=1) as f:
        while True:
            start = time.monotonic()
            try:
                with urllib.request.urlopen(url, timeout=10) as r:
                    r.read()
            except OSError:
                pass
            f.write(f"{1000 * min(time.monotonic() - start, 10):.1f}\n")
            time.sleep(0.1)


if __name__ == "__main__":
    main()
