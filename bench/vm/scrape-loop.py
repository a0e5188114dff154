#!/usr/bin/env python3
"""The scraper of `bench/e2e.sh --scrape` (started by bench/vm/e2e-guest.sh).

    scrape-loop.py HOST:PORT HZ LOG     scrape until SIGTERM
    scrape-loop.py HOST:PORT --once     one scrape; says what came back

GETs http://HOST:PORT/metrics HZ times a second, one connection per scrape
as Prometheus does (5 s timeout), in one long-lived process. A fork+exec
of curl per scrape cost about a second of CPU under TCG on a busy host and
reached 0.4 scrapes a second, so the client would have been the load.

One line per scrape in LOG, written when it ends: its start time (Unix
seconds, as bash's EPOCHREALTIME), its duration in seconds, and "ok" or
"bad". ok means: status 200, a body as long as its Content-Length, and a
`srptd_target_commands_total` sample with a value. A scrape that overruns
its period is not made up for: the next starts at once and the schedule
restarts from there.
"""

import re
import signal
import socket
import sys
import time

SAMPLE = re.compile(rb"^srptd_target_commands_total [0-9]+$", re.M)


def scrape(host, port, request):
    """(ok, body) of one GET."""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(request)
            buf = bytearray()
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
    except OSError:
        return False, b""
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return False, b""
    lines = head.split(b"\r\n")
    status = lines[0].split(b" ")
    if len(status) < 2 or not status[0].startswith(b"HTTP/1.") or status[1] != b"200":
        return False, body
    length = [l.split(b":", 1)[1].strip() for l in lines[1:] if l.lower().startswith(b"content-length:")]
    if len(length) != 1 or not length[0].isdigit() or int(length[0]) != len(body):
        return False, body
    return SAMPLE.search(body) is not None, body


def main():
    argv = sys.argv[1:]
    if len(argv) not in (2, 3) or (len(argv) == 2 and argv[1] != "--once"):
        sys.exit(__doc__)
    addr = argv[0]
    host, _, port = addr.rpartition(":")
    request = (f"GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAccept: text/plain\r\n"
               "Connection: close\r\n\r\n").encode()
    if argv[1] == "--once":
        ok, body = scrape(host, int(port), request)
        samples = sum(1 for l in body.split(b"\n") if l.startswith(b"srptd_"))
        print(f"{'valid' if ok else 'INVALID'} exposition, {len(body)} bytes, {samples} srptd_ samples")
        sys.exit(0 if ok else 1)
    period = 1.0 / float(argv[1])
    out = open(argv[2], "w", buffering=1)

    # SIGTERM ends the loop between scrapes: at once while asleep, else
    # after the scrape in progress is logged.
    state = {"sleeping": False, "stop": False}

    def on_term(*_):
        if state["sleeping"]:
            raise SystemExit(0)
        state["stop"] = True

    signal.signal(signal.SIGTERM, on_term)
    nxt = time.time()
    while not state["stop"]:
        t0 = time.time()
        ok, _ = scrape(host, int(port), request)
        t1 = time.time()
        out.write(f"{t0:.6f} {t1 - t0:.6f} {'ok' if ok else 'bad'}\n")
        nxt += period
        if state["stop"]:
            break
        if nxt > t1:
            state["sleeping"] = True
            if not state["stop"]:
                time.sleep(nxt - t1)
            state["sleeping"] = False
        else:
            nxt = t1


if __name__ == "__main__":
    main()
