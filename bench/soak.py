#!/usr/bin/env python3
"""A soak: at least 1,000,000 keep-alive requests to one worker, and the
worker's resident memory afterwards within 5 MiB of where it was after a
warm-up. Part of `make bench` (not of `make test`: it takes about half a
minute of both cores). Exits 1 when the memory grew more.

    .venv/bin/python bench/soak.py [--requests N] [--app hello]
"""

import argparse
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
FERRULE = ROOT / ".venv" / "bin" / "ferrule"
GROWTH_LIMIT_MIB = 5.0
ROUND_SECONDS = 10
MAX_ROUNDS = 30


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def worker_pid(master):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == master and fields[0] != "Z":
                return int(entry.name)
        time.sleep(0.05)
    raise SystemExit("no worker started")


def rss_mib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no VmRSS for {pid}")


def wrk(port, seconds):
    out = subprocess.run(["wrk", "-t1", "-c16", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    count = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    failed = (sum(map(int, errors.groups())) if errors else 0) + (int(non2xx.group(1)) if non2xx else 0)
    return count, failed


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--app", default="hello")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen([str(FERRULE), f"{args.app}:application", "-b", f"127.0.0.1:{port}",
                               "--log-level", "warning"], cwd=str(BENCH / "apps"),
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        worker = worker_pid(server.pid)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("the server did not listen")
                time.sleep(0.05)
        wrk(port, 3)
        before = rss_mib(worker)
        total = failed = 0
        for _ in range(MAX_ROUNDS):
            count, bad = wrk(port, ROUND_SECONDS)
            total += count
            failed += bad
            if total >= args.requests:
                break
        after = rss_mib(worker)
    finally:
        server.terminate()
        server.wait(30)
    growth = after - before
    print(f"soak: {total:,} keep-alive requests ({failed} failed), worker RSS {before:.1f} -> {after:.1f} MiB "
          f"({growth:+.2f} MiB; limit {GROWTH_LIMIT_MIB} MiB)")
    ok = total >= args.requests and failed == 0 and growth < GROWTH_LIMIT_MIB
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
