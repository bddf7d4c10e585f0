#!/usr/bin/env python3
"""A latecomer client for one timed run: what a client that arrives while
wrk's connections keep the server busy waits for an answer.

    probe.py PORT PATH SECONDS [--post BYTES] [--close] [--tls]

wrk's latency counts only the requests that were answered. A server that
serves one keep-alive connection at a time answers one of wrk's connections
quickly and the others never, and wrk reports the quick ones. This client
opens its own connection half a second into the run and sends the workload's
request every INTERVAL until the run ends; it prints the longest wait in
milliseconds (a request still unanswered when the run is over counts the
time it waited) and how many requests were answered, as JSON.
"""

import json
import socket
import ssl
import sys
import time

INTERVAL = 0.2
START_AFTER = 0.5
# How long after the run an unanswered request is still waited for.
GRACE = 1.0


def read_response(sock, deadline):
    """Reads one HTTP/1.1 response; True if the server keeps the connection."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += recv(sock, deadline)
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip().lower()
    if "content-length" in headers:
        need = int(headers["content-length"]) - len(rest)
        while need > 0:
            need -= len(recv(sock, deadline))
    elif headers.get("transfer-encoding") == "chunked":
        while not rest.endswith(b"0\r\n\r\n"):
            rest = rest[-16:] + recv(sock, deadline)
    else:
        while True:
            try:
                recv(sock, deadline)
            except ConnectionError:
                return False
    return headers.get("connection") != "close" and lines[0].startswith("HTTP/1.1")


def recv(sock, deadline):
    sock.settimeout(max(0.001, deadline - time.monotonic()))
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError("closed")
    return data


def main():
    port, path, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    post = int(sys.argv[sys.argv.index("--post") + 1]) if "--post" in sys.argv else None
    close = "--close" in sys.argv
    tls = None
    if "--tls" in sys.argv:
        # The bench's own self-signed certificate.
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    begin = time.monotonic()
    stop_sending = begin + seconds - 0.3
    deadline = begin + seconds + GRACE
    method, body = ("POST", b"x" * post) if post is not None else ("GET", b"")
    request = (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               + ("Connection: close\r\n" if close else "")
               + (f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n" if post is not None else "")
               + "\r\n").encode() + body
    time.sleep(START_AFTER)
    worst, answered, sock = 0.0, 0, None
    while time.monotonic() < stop_sending:
        sent = time.monotonic()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", port), timeout=deadline - sent)
                if tls:
                    sock = tls.wrap_socket(sock)
            sock.sendall(request)
            keep = read_response(sock, deadline)
        except (OSError, ValueError):
            # Unanswered (or refused) until the deadline: the time waited.
            worst = max(worst, time.monotonic() - sent)
            break
        worst = max(worst, time.monotonic() - sent)
        answered += 1
        if not keep:
            sock.close()
            sock = None
        time.sleep(INTERVAL)
    if sock is not None:
        sock.close()
    print(json.dumps({"worst_ms": round(worst * 1000, 2), "answered": answered}))


if __name__ == "__main__":
    main()
