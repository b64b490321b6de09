"""Added latency at one connection, with the machine's drift cancelled: sends the same POST to
each URL in turn, one request at a time, N rounds, over one keep-alive connection per URL. Each
round sees the same machine state for every URL. Prints, for every URL after the first (the
direct one), its median latency minus the first URL's, in ms: "URL +0.123". A URL written
URL#TOKEN is sent the token as a bearer token (a proxy with tokens declared).

    python3 interleave.py N BODY_FILE PATH DIRECT_URL OTHER_URL...
"""

import http.client
import statistics
import sys
import time


def main():
    rounds, body_file, path, *urls = sys.argv[1:]
    with open(body_file, "rb") as f:
        body = f.read()
    connections, headers = [], []
    for url in urls:
        address, _, token = url.split("//", 1)[1].partition("#")
        connections.append(http.client.HTTPConnection(address))
        headers.append({"Content-Type": "application/json"})
        if token:
            headers[-1]["Authorization"] = f"Bearer {token}"
    latencies = [[] for _ in urls]
    for _ in range(int(rounds)):
        for connection, sent, samples in zip(connections, headers, latencies):
            started = time.perf_counter()
            connection.request("POST", path, body, sent)
            answer = connection.getresponse()
            answer.read()
            samples.append(time.perf_counter() - started)
            if answer.status != 200:
                sys.exit(f"{connection.host}:{connection.port} answered {answer.status}")
    direct = statistics.median(latencies[0])
    for url, samples in zip(urls[1:], latencies[1:]):
        print(f"{url} {1000 * (statistics.median(samples) - direct):+.3f}")


if __name__ == "__main__":
    main()
