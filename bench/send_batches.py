#!/usr/bin/env python3
"""Sends a backlog: COUNT events as batches of 100 over a few keep-alive connections.

    send_batches.py URL BATCH_FILE COUNT [CONNECTIONS]

BATCH_FILE is a CloudEvents batch of 100 events (payloads.py writes one). COUNT is rounded
up to a whole number of batches. Every request must be answered 2xx; the script stops at
the first other answer. Prints "sent=<events> seconds=<elapsed>" on success.
"""

import http.client
import sys
import threading
import time
from urllib.parse import urlsplit

BATCH = 100


def main() -> int:
    url = urlsplit(sys.argv[1])
    body = open(sys.argv[2], "rb").read()
    count = int(sys.argv[3])
    connections = int(sys.argv[4]) if len(sys.argv) > 4 else 4
    requests = -(-count // BATCH)
    lock = threading.Lock()
    state = {"next": 0, "ok": 0, "error": None}

    def worker() -> None:
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        headers = {"Content-Type": "application/cloudevents-batch+json"}
        while True:
            with lock:
                if state["error"] or state["next"] >= requests:
                    break
                state["next"] += 1
            try:
                conn.request("POST", url.path or "/", body, headers)
                response = conn.getresponse()
                text = response.read()
            except OSError as error:
                with lock:
                    state["error"] = f"request failed: {error}"
                break
            with lock:
                if 200 <= response.status < 300:
                    state["ok"] += 1
                else:
                    state["error"] = f"HTTP {response.status}: {text[:200]!r}"
        conn.close()

    start = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    if state["error"]:
        print(f"error after {state['ok'] * BATCH} events: {state['error']}", file=sys.stderr)
        return 1
    print(f"sent={state['ok'] * BATCH} seconds={elapsed:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
