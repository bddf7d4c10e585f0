"""Memory at scale: each server's worker RSS with one worker and one
application thread, started, then holding 1,000 idle keep-alive
connections (each has had one hello request answered), then with 1,000
slow clients mid-response (each asked for bench/apps/big.py's 1 MiB and
reads nothing, with a 4 KiB receive buffer).

    bench/.venv/bin/python bench/memory.py                  # ferrule, granian, gunicorn
    bench/.venv/bin/python bench/memory.py --connections 500 --servers ferrule

The RSS is the worker's (the first child of a forking server), from
/proc/PID/status, read once the connections are open and a second has
passed. Every server gets room for the connections: a keep-alive timeout of
120 s and 4,000 connections where it has such settings. Prints a Markdown
table; `--save` also writes bench/results/memory-<date>.md.
"""

import argparse
import datetime
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import APPS, RESULTS, free_port, process_tree_rss, server_command, stop_group, wait_ready  # noqa: E402

# Settings each server needs to keep this many connections open at all.
ROOM = {
    "ferrule": ["--worker-connections", "4000", "--keep-alive", "120"],
    "gunicorn": ["--worker-connections", "4000", "--keep-alive", "120"],
    "granian": ["--backlog", "4096", "--backpressure", "4000", "--http1-keep-alive"],
}
HELLO = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
SETTLE_S = 1.0
# Whole run bounded: each phase's connections must open within this.
OPEN_DEADLINE_S = 60


def start(name, app):
    port = free_port()
    cmd = server_command(name, app, port, 1, 1)
    if name == "granian":
        # Its flags go before the application.
        cmd = cmd[:-1] + ROOM[name] + cmd[-1:]
    else:
        cmd += ROOM.get(name, [])
    proc = subprocess.Popen(cmd, cwd=str(APPS), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wait_ready(port, proc)
    time.sleep(SETTLE_S)
    return proc, port


def open_connections(port, count, request, rcvbuf=None, read=True):
    """`count` connections, each sent `request`; with `read`, each reads its
    (small) response and stays open."""
    socks = []
    deadline = time.monotonic() + OPEN_DEADLINE_S
    for _ in range(count):
        sock = socket.socket()
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(max(1.0, deadline - time.monotonic()))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        if read:
            data = b""
            while b"hello" not in data.lower() and b"\r\n\r\n" not in data:
                data += sock.recv(4096)
        socks.append(sock)
    return socks


def measure(name, count):
    row = {}
    proc, port = start(name, "hello")
    try:
        row["started"] = process_tree_rss(proc.pid)
        socks = open_connections(port, count, HELLO)
        time.sleep(SETTLE_S)
        alive = sum(1 for s in socks if not closed(s))
        row["idle"] = process_tree_rss(proc.pid)
        row["idle_alive"] = alive
        for s in socks:
            s.close()
    finally:
        stop_group(proc)
    proc, port = start(name, "big")
    try:
        socks = open_connections(port, count, HELLO, rcvbuf=4096, read=False)
        time.sleep(SETTLE_S * 2)
        row["slow"] = process_tree_rss(proc.pid)
        for s in socks:
            s.close()
    finally:
        stop_group(proc)
    return row


def closed(sock):
    """Whether the server has closed an idle connection."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        sock.setblocking(True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--servers", default="ferrule,granian,gunicorn")
    parser.add_argument("--save", action="store_true")
    args = parser.parse_args()
    # Room for the client's sockets, and for the servers it starts.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.connections + 256)), hard))
    lines = [
        f"Worker RSS (MiB), one worker, one thread, {args.connections} connections "
        f"({datetime.date.today().isoformat()}):",
        "",
        "| server | started | idle keep-alive | (still open) | slow clients mid-response |",
        "|---|---|---|---|---|",
    ]
    for name in args.servers.split(","):
        row = measure(name, args.connections)
        mib = lambda k: f"{row[k] / 1024:.1f}"  # noqa: E731
        lines.append(f"| {name} | {mib('started')} | {mib('idle')} | {row['idle_alive']} | {mib('slow')} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.save:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"memory-{datetime.date.today().isoformat()}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
