"""Instructions per request, counted by callgrind: repeatable on a noisy
machine, where requests per second are not.

    make bench-instructions                                  # hello, json, echo
    .venv/bin/python bench/instructions.py --apps json --requests 5000
    .venv/bin/python bench/instructions.py --apps hello --close   # a connection per request
    .venv/bin/python bench/instructions.py --apps hello --uwsgi   # uwsgi packets, as nginx sends them
    .venv/bin/python bench/instructions.py --apps hello --metrics # recording for --metrics-bind
    make bench-guard     # fail if a count rose over 3% above bench/instructions-baseline.json

Serves each app from bench/apps in one ferrule process (no master), or in
bjoern for comparison (`--servers ferrule,bjoern`), under
`valgrind --tool=callgrind` with collection off, sends warm-up requests,
switches collection on, sends N requests on one keep-alive connection,
switches it off and divides. Prints the per-request total and the functions
that cost the most, inclusive of what they call (callgrind_annotate).

The server runs with PYTHONHASHSEED=0: with Python's hashing randomised,
the same binary's count moved by up to 0.7% between runs (dict layouts
differ); with it fixed, by about 0.1%. That is what lets `--check` hold a
count to 3% of its baseline on any machine.

The baseline (`bench/instructions-baseline.json`) is refreshed only in a
commit that says why the counts moved:
`.venv/bin/python bench/instructions.py --write-baseline bench/instructions-baseline.json`.
"""

import json

import argparse
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "bench" / "apps"
PYTHON = ROOT / ".venv" / "bin" / "python"
PEERS_PYTHON = ROOT / "bench" / ".venv" / "bin" / "python"

REQUESTS = {
    "echo": b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1024\r\n\r\n" + b"x" * 1024,
}
# Workloads whose module in bench/apps has another name (as in bench/run.py).
MODULES = {"json": "json_app", "flask": "flask_app", "django": "django_app"}
DEFAULT_REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: wrk\r\n\r\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_response(sock, buf):
    """Reads one Content-Length or chunked response; returns what follows it."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("server closed the connection")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    if re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
        # The benchmark apps' chunks hold no CRLF, so the last chunk is the
        # first "0" size line after a CRLF.
        while b"\r\n0\r\n\r\n" not in b"\r\n" + rest:
            data = sock.recv(65536)
            if not data:
                raise RuntimeError("server closed the connection")
            rest += data
        end = (b"\r\n" + rest).index(b"\r\n0\r\n\r\n") + 5
        return rest[end:]
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if not match:
        raise RuntimeError(f"no Content-Length or chunked framing in {head!r}")
    need = int(match.group(1))
    while len(rest) < need:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("server closed the connection")
        rest += data
    return rest[need:]


def uwsgi_request(app):
    """A uwsgi packet with the variables nginx's stock uwsgi_params and a
    browser-like request give (the request `app` is measured with)."""
    variables = {
        "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
        "REQUEST_URI": "/", "PATH_INFO": "/", "DOCUMENT_ROOT": "/usr/share/nginx/html",
        "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "51234", "SERVER_PORT": "8080", "SERVER_NAME": "localhost", "HTTP_HOST": "127.0.0.1",
        "HTTP_USER_AGENT": "wrk",
    }
    block = b""
    for name, value in variables.items():
        for part in (name.encode(), value.encode()):
            block += len(part).to_bytes(2, "little") + part
    return b"\0" + len(block).to_bytes(2, "little") + b"\0" + block


def send_uwsgi(port, packet, count):
    """`count` uwsgi requests, a connection each, read to the end."""
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(packet)
            while sock.recv(65536):
                pass


def send_requests(port, request, count, close=False):
    """`count` requests on one keep-alive connection, or with `close` each
    on a connection of its own (Connection: close, read to the end)."""
    if close:
        request = request.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        for _ in range(count):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(request)
                read_response(sock, b"")
                while sock.recv(65536):
                    pass
        return
    with socket.create_connection(("127.0.0.1", port)) as sock:
        buf = b""
        for _ in range(count):
            sock.sendall(request)
            buf = read_response(sock, buf)


def callgrind_control(*args):
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True)


def server_code(server, workload, port, uwsgi=False, metrics=False):
    """Python code that serves `workload`'s app on `port` in one process, one thread."""
    app = MODULES.get(workload, workload)
    prelude = f"import sys; sys.path.insert(0, {str(APPS)!r}); import {app}; "
    if server == "ferrule":
        scheme = "uwsgi://" if uwsgi else ""
        return PYTHON, prelude + (
            f"import ferrule; ferrule.serve({app}.application, bind='{scheme}127.0.0.1:{port}', "
            "threads=1, log_level='warning'" + (", metrics_bind='127.0.0.1:0'" if metrics else "") + ")"
        )
    if uwsgi:
        raise SystemExit("--uwsgi measures ferrule only")
    if server == "bjoern":
        return PEERS_PYTHON, prelude + f"import bjoern; bjoern.run({app}.application, '127.0.0.1', {port})"
    raise SystemExit(f"unknown server {server!r}: ferrule or bjoern (bjoern needs `make bench` set-up)")


def measure(server_name, app, count, top, close=False, uwsgi=False, metrics=False):
    port = free_port()
    out_dir = tempfile.mkdtemp(prefix="ferrule-callgrind-")
    python, code = server_code(server_name, app, port, uwsgi, metrics)
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out_dir}/callgrind.out.%p", str(python), "-c", code],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    try:
        request = REQUESTS.get(app, DEFAULT_REQUEST)
        if uwsgi:
            packet = uwsgi_request(app)

            def send(port, _request, n, _close=False):
                send_uwsgi(port, packet, n)
        else:
            send = send_requests
        deadline = time.monotonic() + 120
        while True:
            try:
                send(port, request, 1)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    server.kill()
                    errors = server.stderr.read().decode(errors="replace")[-3000:]
                    raise RuntimeError(f"{server_name} under valgrind did not come up for {app}:\n{errors}")
                time.sleep(0.5)
        send(port, request, 200, close)
        callgrind_control("-i", "on", str(server.pid))
        send(port, request, count, close)
        callgrind_control("-i", "off", str(server.pid))
        callgrind_control("-d", str(server.pid))
    finally:
        server.terminate()
        server.wait(timeout=60)
    dumps = sorted(glob.glob(f"{out_dir}/callgrind.out.*"), key=os.path.getsize)
    report = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", f"--threshold=99", dumps[-1]],
        capture_output=True, text=True, check=True,
    ).stdout
    total = None
    rows = []
    for line in report.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in m.group(2):
            total = ir
        else:
            rows.append((ir, m.group(2)))
    shape = "uwsgi requests, a connection each" if uwsgi else "requests, a connection each" if close else "requests"
    print(f"{server_name} {app}: {total / count:,.0f} instructions per request ({count} {shape})")
    for ir, name in rows[:top]:
        print(f"  {ir / count:>10,.0f}  {name[:150]}")
    return total / count


# The regression guard's workloads and its tolerance.
GUARD_APPS = ["hello", "json", "echo", "chunks", "flask"]
GUARD_TOLERANCE = 0.03


def check(baseline_path, count):
    """Measures every app of the baseline; False if one rose over the
    tolerance."""
    baseline = json.loads(Path(baseline_path).read_text())["instructions_per_request"]
    ok = True
    for app, expected in baseline.items():
        got = measure("ferrule", app, count, 0)
        change = got / expected - 1
        verdict = "ok" if change <= GUARD_TOLERANCE else f"ROSE OVER {GUARD_TOLERANCE:.0%}"
        print(f"  {app}: {got:,.0f} against {expected:,.0f} ({change:+.1%}) {verdict}")
        ok &= change <= GUARD_TOLERANCE
    if not ok:
        print(f"Instruction counts rose over {GUARD_TOLERANCE:.0%} above {baseline_path}: find the cost "
              "(the report above lists the heaviest functions), or, if it is wanted, refresh the baseline "
              "in a commit that says why.", file=sys.stderr)
    return ok


def write_baseline(path, count):
    counts = {app: round(measure("ferrule", app, count, 0)) for app in GUARD_APPS}
    Path(path).write_text(json.dumps({
        "about": "Instructions per request under callgrind (bench/instructions.py, PYTHONHASHSEED=0); "
                 "`make bench-guard` fails when one rises over 3% above these. Refreshed only in a "
                 "commit that says why.",
        "instructions_per_request": counts,
    }, indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default="hello,json")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--servers", default="ferrule", help="ferrule and/or bjoern")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--close", action="store_true", help="a new connection per request (Connection: close)")
    parser.add_argument("--uwsgi", action="store_true", help="uwsgi requests as nginx sends them, a connection each")
    parser.add_argument("--metrics", action="store_true", help="with --metrics-bind (requests recorded)")
    parser.add_argument("--check", metavar="BASELINE", help="fail if a count rose over 3%% above BASELINE")
    parser.add_argument("--write-baseline", metavar="BASELINE", help="measure the guard's apps into BASELINE")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is needed: apt-get install valgrind", file=sys.stderr)
        return 1
    if args.check:
        return 0 if check(args.check, args.requests) else 1
    if args.write_baseline:
        write_baseline(args.write_baseline, args.requests)
        return 0
    for app in args.apps.split(","):
        for server in args.servers.split(","):
            measure(server, app, args.requests, args.top, args.close, args.uwsgi, args.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
