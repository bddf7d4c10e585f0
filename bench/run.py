#!/usr/bin/env python3
"""ferrule against its peers, every workload, one run.

    bench/run.py            full run: bench/results/<date>.md and .png
    bench/run.py --smoke    every cell for one second, file for three (proves the harness)

Method: each server is pinned to core 0 and wrk to core 1 (taskset), one
worker and one application thread where a server has such options (each in
its fastest documented configuration for that shape), a warm-up, then a
verification run whose every response is checked (status 200 and the
expected body length, by bench/check.lua), then timed rounds whose median is
reported, with a latecomer client (bench/probe.py) checking that every
client gets answered. A round during which the host took a core away
(steal time) is run again, and the server core's split between user space
and the kernel is recorded. The servers of a workload run side by side and
the rounds alternate between them, so the machine's drift falls on all
alike. A cell with any error is reported as failed, not as a speed.
Ratios are taken within this run only: absolute numbers drift on a shared
machine. `make bench` sets up bench/.venv with the peers first.

Gateway cells (gw_*) put nginx in front of each server over a unix socket,
the same nginx configuration apart from the upstream's protocol (uwsgi, or
HTTP/1.1 with kept connections): ferrule over uwsgi and over HTTP, uWSGI
over uwsgi, gunicorn (gthread) over HTTP and over uwsgi. The server is
pinned to core 0; nginx (one worker) and wrk share core 1.

The scaling cell (hello_scaling) gives half the machine's cores to the
server's workers (as many workers as cores) and the rest to wrk: one each
on two cores. It runs ferrule, Granian, gunicorn and uWSGI with the same
number of workers, and the report gives each one's requests/s per server
core against its one-core hello cell.

Static cells (static_*) serve one file from a directory: ferrule with
--static, and nginx (one worker, sendfile on, as Debian ships it, with
keep-alive connections unlimited in requests as ferrule's are), each pinned
to core 0, wrk on core 1.
"""

import argparse
import datetime
import json
import math
import os
import platform
import re
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
APPS = BENCH / "apps"
RESULTS = BENCH / "results"
FERRULE = ROOT / ".venv" / "bin" / "ferrule"
PEERS = BENCH / ".venv" / "bin"
# wrk's own timeout: a latecomer that waits this long was left unanswered.
STARVED_MS = 2000
# This machine is a virtual one: the host takes its cores away at times
# (steal time in /proc/stat), for up to two thirds of a round, and a round
# so robbed measures the host, not the server. A round whose steal on
# either core is above STEAL_LIMIT_PCT is run again, at most STEAL_RETRIES
# times, STEAL_PAUSE_S apart; the least robbed attempt is kept.
STEAL_LIMIT_PCT = 3.0
STEAL_RETRIES = 2
STEAL_PAUSE_S = 2
CEILING = BENCH / "hyper-hello" / "target" / "release" / "hyper-hello"
CHECK_LUA = BENCH / "check.lua"

SERVER_ORDER = ["ferrule", "bjoern", "granian", "uwsgi", "gunicorn", "waitress", "fastwsgi", "hyper"]


def py_runner(module_expr):
    return [str(PEERS / "python"), "-c", module_expr]


def tls_files():
    """A self-signed certificate and its key for the TLS cell, made once
    (never checked in): (certificate, key)."""
    d = RESULTS / ".tls"
    d.mkdir(parents=True, exist_ok=True)
    cert, key = d / "cert.pem", d / "key.pem"
    if not cert.exists() or not key.exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "3650", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return str(cert), str(key)


# Each server's flags for a certificate and key (the TLS cell), for those
# that serve TLS themselves.
TLS_FLAGS = {
    "ferrule": ("--certfile", "--keyfile"),
    "gunicorn": ("--certfile", "--keyfile"),
    "granian": ("--ssl-certificate", "--ssl-keyfile"),
}


# Each server's flags for HTTP/2 (over TLS, chosen by ALPN).
H2_FLAGS = {
    "ferrule": ("--http-protocols", "h2,h1"),
    "gunicorn": ("--http-protocols", "h2,h1"),
    "granian": ("--http", "2"),
}


def server_command(name, app, port, workers, threads, tls=False, h2=False):
    """The command that serves `app` (a module in bench/apps) on `port`, or
    None when the server cannot take this shape."""
    if h2:
        cmd = server_command(name, app, port, workers, threads, tls=True) if name in H2_FLAGS else None
        if cmd is None:
            return None
        if name == "ferrule":
            return cmd + list(H2_FLAGS[name])
        # Before the application, the last argument of gunicorn's and
        # Granian's command lines.
        return cmd[:-1] + list(H2_FLAGS[name]) + cmd[-1:]
    if tls:
        if name not in TLS_FLAGS:
            return None
        cmd = server_command(name, app, port, workers, threads)
        cert, key = tls_files()
        cert_flag, key_flag = TLS_FLAGS[name]
        given = [cert_flag, cert, key_flag, key]
        if name == "ferrule":
            return cmd + given
        # Before the application, the last argument of gunicorn's and
        # Granian's command lines.
        return cmd[:-1] + given + cmd[-1:]
    if name == "ferrule":
        return [str(FERRULE), "-w", str(workers), "--threads", str(threads), f"{app}:application",
                "-b", f"127.0.0.1:{port}", "--log-level", "warning"]
    if name == "gunicorn":
        return [str(PEERS / "gunicorn"), "-w", str(workers), "-k", "gthread", "--threads", str(threads),
                "-b", f"127.0.0.1:{port}", "--log-level", "warning", f"{app}:application"]
    if name == "uwsgi":
        cmd = [str(PEERS / "uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--wsgi-file", f"{app}.py",
               "--processes", str(workers), "--disable-logging", "--die-on-term", "--need-app"]
        if threads > 1:
            cmd += ["--threads", str(threads)]
        if workers > 1:
            cmd += ["--master"]
        return cmd
    if name == "granian":
        return [str(PEERS / "granian"), "--interface", "wsgi", "--workers", str(workers),
                "--blocking-threads", str(threads), "--host", "127.0.0.1", "--port", str(port),
                "--log-level", "warning", f"{app}:application"]
    if workers > 1:
        return None
    if name == "waitress":
        return [str(PEERS / "waitress-serve"), f"--threads={threads}", f"--listen=127.0.0.1:{port}",
                f"{app}:application"]
    if threads > 1:
        return None
    if name == "bjoern":
        return py_runner(f"import bjoern, {app}; bjoern.run({app}.application, '127.0.0.1', {port})")
    if name == "fastwsgi":
        return py_runner(f"import fastwsgi, {app}; fastwsgi.run({app}.application, host='127.0.0.1', port={port})")
    if name == "hyper" and app == "hello":
        return [str(CEILING), str(port)]
    return None


# The gateway cells' servers: "<server>-<protocol nginx speaks to it>".
GATEWAY_SERVERS = ["ferrule-uwsgi", "ferrule-http", "uwsgi-uwsgi", "gunicorn-http", "gunicorn-uwsgi"]


def gateway_backend_command(variant, app, sock):
    """The command that serves `app` on the unix socket `sock` in the
    protocol `variant` names."""
    server, protocol = variant.rsplit("-", 1)
    if server == "ferrule":
        bind = f"uwsgi://unix:{sock}" if protocol == "uwsgi" else f"unix:{sock}"
        return [str(FERRULE), "-w", "1", "--threads", "1", f"{app}:application", "-b", bind,
                "--log-level", "warning"]
    if server == "uwsgi":
        return [str(PEERS / "uwsgi"), "--socket", sock, "--wsgi-file", f"{app}.py", "--processes", "1",
                "--disable-logging", "--die-on-term", "--need-app"]
    if server == "gunicorn":
        cmd = [str(PEERS / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "1", "-b", f"unix:{sock}",
               "--log-level", "warning"]
        if protocol == "uwsgi":
            cmd += ["--protocol", "uwsgi"]
        return cmd + [f"{app}:application"]
    return None


# What every nginx the harness starts has: one worker, in the foreground,
# its files in the cell's run directory.
NGINX_PRELUDE = """daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections 1024; }}
"""
GATEWAY_NGINX_CONF = NGINX_PRELUDE + """http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    uwsgi_temp_path {dir}/uwsgi;
    upstream backend {{
        server unix:{sock};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
{location}
        }}
    }}
}}
"""
GATEWAY_LOCATIONS = {
    "uwsgi": "            include /etc/nginx/uwsgi_params;\n            uwsgi_pass backend;",
    "http": "            proxy_pass http://backend;\n            proxy_http_version 1.1;\n"
            "            proxy_set_header Connection \"\";\n            proxy_set_header Host $host;",
}


# The static cells' servers, and nginx's configuration for them.
STATIC_SERVERS = ["ferrule", "nginx"]
STATIC_FILES = {"4k.bin": 4096, "1m.bin": 1024 * 1024}
STATIC_NGINX_CONF = NGINX_PRELUDE + """http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    server {{
        listen 127.0.0.1:{port};
        location /static/ {{ alias {files}/; }}
        location / {{ return 200 "Hello, World!"; }}
    }}
}}
"""


# The h2 cell's load: connections, and streams open at once on each.
H2_CONNECTIONS = 50
H2_STREAMS = 10

# The scaling cell's split of the machine.
CORES = os.cpu_count() or 2
SCALE_WORKERS = max(1, CORES // 2)

# name, app module, path, expected body length, extra wrk env, workers, threads, pinned, ratio target
WORKLOADS = [
    dict(name="hello", app="hello", expect=13, target=("bjoern", 1.0)),
    dict(name="hello_close", app="hello", expect=13, env={"WRK_CLOSE": "1"}, target=("best", 1.0)),
    dict(name="json", app="json_app", expect=75, target=("bjoern", 1.0)),
    dict(name="echo", app="echo", expect=1024, env={"WRK_METHOD": "POST", "WRK_BODY_LEN": "1024"},
         target=("bjoern", 1.0)),
    dict(name="big", app="big", expect=1024 * 1024, target=("best", 1.5)),
    dict(name="chunks", app="chunks", expect=10000, target=("best", 1.5)),
    # A 10 MiB download among 64 takes most of a second (p99 0.4-0.9 s in
    # full runs), so a one-second smoke round could end before any did.
    dict(name="file", app="file_app", expect=10 * 1024 * 1024, target=("best", 1.5), smoke_seconds=3),
    dict(name="flask", app="flask_app", expect=None, target=("best", 1.0)),
    dict(name="django", app="django_app", expect=None, target=("best", 1.0)),
    dict(name="hello_2_workers", app="hello", expect=13, workers=2, pinned=False, target=("best", 1.0)),
    # The machine's cores, half to the server's workers and half to wrk (one
    # each on two cores), against the peers that run workers.
    dict(name="hello_scaling", app="hello", expect=13, workers=SCALE_WORKERS, server_cpus=f"0-{SCALE_WORKERS - 1}",
         client_cpus=f"{SCALE_WORKERS}-{max(SCALE_WORKERS, CORES - 1)}", wrk_threads=max(1, CORES - SCALE_WORKERS),
         only=("ferrule", "granian", "gunicorn", "uwsgi"), target=("best", 1.0)),
    dict(name="slow_mixed", app="slow_mixed", expect=13, threads=4, kind="slow_mixed", target=("p99", 1.0)),
    dict(name="idle_rss", app="hello", kind="rss", target=("rss", 1.2)),
    dict(name="static_4k", app="hello", path="/static/4k.bin", expect=4096, kind="static", target=("best", 1.0)),
    dict(name="static_1m", app="hello", path="/static/1m.bin", expect=1024 * 1024, kind="static",
         target=("best", 1.0)),
    # HTTPS with keep-alive connections (wrk's), against the peers that
    # serve TLS themselves; docs/performance.md sets it against "hello".
    dict(name="tls_hello", app="hello", expect=13, tls=True, only=("ferrule", "granian", "gunicorn"),
         target=("best", 1.0)),
    # HTTP/2 over TLS: h2load, H2_CONNECTIONS connections with H2_STREAMS
    # streams at once on each.
    dict(name="h2_hello", app="hello", expect=13, kind="h2", only=("ferrule", "granian", "gunicorn"),
         target=("best", 1.0)),
    dict(name="gw_hello", app="hello", expect=13, kind="gateway", target=("gateway", 1.0)),
    dict(name="gw_flask", app="flask_app", expect=None, kind="gateway", target=("gateway", 1.0)),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unverified_tls():
    """A client context for the bench's own self-signed certificate."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def wait_ready(port, proc, timeout=30, tls=False, h2=False):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if h2:
            # A server that speaks only HTTP/2 on its TLS port (Granian's
            # --http 2) answers no HTTP/1.1 request.
            try:
                out = subprocess.run(["curl", "-sk", "--http2", "--max-time", "5", "-o", "/dev/null", "-w",
                                      "%{http_version}", f"https://127.0.0.1:{port}/"],
                                     capture_output=True, text=True, timeout=10)
            except subprocess.TimeoutExpired:
                continue
            if out.stdout == "2":
                return True
            time.sleep(0.05)
            continue
        try:
            raw = socket.create_connection(("127.0.0.1", port), timeout=1)
            with unverified_tls().wrap_socket(raw) if tls else raw as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                data = b""
                while b"\r\n\r\n" not in data:
                    block = s.recv(65536)
                    if not block:
                        break
                    data += block
                if data.startswith(b"HTTP/1."):
                    return True
        except OSError:
            time.sleep(0.05)
    return False


def parse_wrk(out):
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    errors = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(map(int, m.groups()))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"^BAD (\d+)$", out, re.M)
    bad = int(m.group(1)) if m else 0
    p99_ms = None
    if p99:
        p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    return (float(rps.group(1)) if rps else 0.0), p99_ms, errors, bad


def server_cpus(w):
    """The cores (a taskset list) workload `w`'s server is pinned to, or None."""
    return w.get("server_cpus", "0") if w.get("pinned", True) else None


def client_cpus(w):
    """The cores wrk and the latecomer are pinned to, or None."""
    return w.get("client_cpus", "1") if w.get("pinned", True) else None


def pin(cpus):
    return ["taskset", "-c", cpus] if cpus else []


def wrk(port, seconds, connections, env, path="/", cpus="1", threads=1, check=False, expect=None, tls=False):
    # The verification run builds every body in Lua, which slows wrk; it
    # checks correctness, so it waits longer than wrk's 2 s default.
    timeout = ["--timeout", "30s"] if check else []
    cmd = pin(cpus) + [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *timeout, "-s", str(CHECK_LUA),
        f"{'https' if tls else 'http'}://127.0.0.1:{port}{path}",
    ]
    full_env = dict(os.environ, **env)
    if check and expect is not None:
        full_env["EXPECT_LEN"] = str(expect)
    out = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=seconds + 60).stdout
    return parse_wrk(out)


def process_tree_rss(pid):
    """RSS of one serving process: the first child if the server forks
    workers, else the process itself (KiB)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    target = min(kids) if kids else pid
    for line in Path(f"/proc/{target}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def stop_group(proc):
    """Ends a process started in a session of its own, and its children."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Running:
    """A server started for one workload (with nginx in front of it for a
    gateway cell: `front`)."""

    def __init__(self, name, proc, port, log, front=None):
        self.name, self.proc, self.port, self.log, self.front = name, proc, port, log, front

    def stop(self):
        if self.front is not None:
            stop_group(self.front)
        stop_group(self.proc)
        self.log.close()


def wait_ok(port, proc, timeout=30):
    """Waits until GET / through nginx is answered 200 (502 until the
    server behind it is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def start_gateway(variant, w):
    """Starts `variant`'s server on a unix socket and nginx in front of it."""
    run_dir = RESULTS / f".gw-{variant}-{w['name']}"
    run_dir.mkdir(exist_ok=True)
    for sub in ("body", "proxy", "uwsgi"):
        (run_dir / sub).mkdir(exist_ok=True)
    sock = str(run_dir / "app.sock")
    if os.path.exists(sock):
        os.unlink(sock)
    cmd = gateway_backend_command(variant, w["app"], sock)
    if cmd is None:
        return None, {"status": "n/a"}
    log = open(RESULTS / f".{variant}-{w['name']}.log", "w")
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(["taskset", "-c", "0"] + cmd, cwd=str(APPS), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    port = free_port()
    conf = run_dir / "nginx.conf"
    conf.write_text(GATEWAY_NGINX_CONF.format(
        dir=run_dir, sock=sock, port=port, user="user root;" if os.geteuid() == 0 else "",
        location=GATEWAY_LOCATIONS[variant.rsplit("-", 1)[1]]))
    front = subprocess.Popen(["taskset", "-c", "1", "nginx", "-p", str(run_dir), "-c", str(conf),
                              "-e", str(run_dir / "error.log")], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, start_new_session=True)
    running = Running(variant, proc, port, log, front)
    if not wait_ok(port, front):
        running.stop()
        return None, {"status": "failed", "why": "did not start"}
    return running, None


def static_files_dir():
    """The directory the static cells serve, with their files in it."""
    files = RESULTS / ".static-files"
    files.mkdir(exist_ok=True)
    for name, size in STATIC_FILES.items():
        path = files / name
        if not path.exists() or path.stat().st_size != size:
            path.write_bytes(os.urandom(size))
    return files


def start_static(server, w):
    """Starts `server` serving static_files_dir() under /static/."""
    files = static_files_dir()
    port = free_port()
    log = open(RESULTS / f".{server}-{w['name']}.log", "w")
    if server == "ferrule":
        cmd = [str(FERRULE), "-w", "1", "--threads", "1", f"{w['app']}:application", "-b", f"127.0.0.1:{port}",
               "--static", f"/static={files}", "--log-level", "warning"]
    elif server == "nginx":
        run_dir = RESULTS / f".static-nginx-{w['name']}"
        (run_dir / "body").mkdir(parents=True, exist_ok=True)
        conf = run_dir / "nginx.conf"
        conf.write_text(STATIC_NGINX_CONF.format(dir=run_dir, port=port, files=files,
                                                 user="user root;" if os.geteuid() == 0 else ""))
        cmd = ["nginx", "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")]
    else:
        return None, {"status": "n/a"}
    return launch(server, w, cmd, port, log)


def launch(server, w, cmd, port, log):
    """Starts `cmd`, pinned as `w` says, and waits until it answers on
    `port`: (Running, None), or (None, result) when it does not start."""
    env = dict(os.environ, PYTHONPATH=str(APPS), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.Popen(pin(server_cpus(w)) + cmd, cwd=str(APPS), stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    running = Running(server, proc, port, log)
    if not wait_ready(port, proc, tls=w.get("tls", False), h2=w.get("kind") == "h2"):
        running.stop()
        return None, {"status": "failed", "why": "did not start"}
    return running, None


def start_server(server, w):
    """Starts `server` for workload `w`: (Running, None), or (None, result)
    when it cannot take this shape or does not start."""
    if w.get("kind") == "gateway":
        return start_gateway(server, w)
    if w.get("kind") == "static":
        return start_static(server, w)
    workers = w.get("workers", 1)
    threads = w.get("threads", 1)
    port = free_port()
    cmd = server_command(server, w["app"], port, workers, threads, tls=w.get("tls", False),
                         h2=w.get("kind") == "h2")
    if server not in w.get("only", (server,)):
        cmd = None
    if cmd is None or (server == "hyper" and w["name"] != "hello"):
        return None, {"status": "n/a"}
    log = open(RESULTS / f".{server}-{w['name']}.log", "w")
    return launch(server, w, cmd, port, log)


def h2load(port, w, seconds=None, requests=None, cpus="1"):
    """An h2load run over TLS (H2_CONNECTIONS connections, H2_STREAMS
    streams at once on each), for `seconds` or `requests`: (req/s, errors,
    2xx responses, body bytes)."""
    bound = ["-D", str(seconds)] if seconds else ["-n", str(requests)]
    cmd = pin(cpus) + ["h2load", "-t1", "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS), *bound,
                       f"https://127.0.0.1:{port}{w.get('path', '/')}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=(seconds or 30) + 30).stdout
    except subprocess.TimeoutExpired:
        # Streams left unanswered: the server stalled (-1 errors).
        return 0.0, -1, 0, 0
    rps = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", out)
    done = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored, (\d+) timeout", out)
    ok = re.search(r"status codes: (\d+) 2xx", out)
    data = re.search(r"traffic: .*?, [\d.]+[KMG]?B \((\d+)\) data", out)
    errors = sum(int(g) for g in done.groups()[1:]) if done else 1
    return ((float(rps.group(1)) if rps else 0.0), errors, int(ok.group(1)) if ok else 0,
            int(data.group(1)) if data else 0)


def verify(running, w, warmup):
    """Warm-up, then a run whose every response is checked; a failed result
    or None."""
    if w.get("kind") == "h2":
        h2load(running.port, w, seconds=max(1, warmup), cpus=client_cpus(w))
        n = 2000
        _, errors, ok, data = h2load(running.port, w, requests=n, cpus=client_cpus(w))
        if errors < 0:
            return {"status": "failed", "why": "streams left unanswered (h2load timed out)"}
        if errors or ok != n or data != n * w["expect"]:
            return {"status": "failed", "why": f"{errors} errors, {ok} of {n} 2xx, {data} body bytes "
                                               f"(expected {n * w['expect']})"}
        return None
    env_w = w.get("env", {})
    cpus, threads = client_cpus(w), w.get("wrk_threads", 1)
    path = w.get("path", "/")
    tls = w.get("tls", False)
    wrk(running.port, warmup, 64, env_w, path=path, cpus=cpus, threads=threads, tls=tls)
    _, _, errors, bad = wrk(running.port, max(1, warmup), 64, env_w, path=path, cpus=cpus, threads=threads,
                            check=True, expect=w["expect"], tls=tls)
    if errors or bad:
        return {"status": "failed", "why": f"{errors} errors, {bad} bad responses in verification"}
    return None


# One timed round's measures (one_round).
Round = namedtuple("Round", "rps p99_ms latecomer_ms steal_pct user_pct")


def core_ticks():
    """Per core (cpu0, cpu1): the first eight /proc/stat fields (user, nice,
    system, idle, iowait, irq, softirq, steal), in ticks."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name in ("cpu0", "cpu1"):
            ticks[name] = [int(f) for f in fields[:8]]
    return ticks


def ticks_between(before, after, core):
    """Each /proc/stat field's ticks on `core` between two core_ticks()."""
    return [b - a for a, b in zip(before[core], after[core])]


def steal_pct(before, after):
    """The larger share of the two cores' time that the host took (steal)
    between two core_ticks() readings, in percent."""
    worst = 0.0
    for core in after:
        spent = ticks_between(before, after, core)
        if sum(spent) > 0:
            worst = max(worst, 100.0 * spent[7] / sum(spent))
    return worst


def server_user_pct(before, after):
    """Of the time the server's core (core 0) was busy, the share spent in
    user space (the rest is the kernel: system calls, interrupts, softirq),
    in percent. It bounds what any change to the server's own code can
    gain: with none left, the kernel's share would still take as long."""
    spent = ticks_between(before, after, "cpu0")
    busy = spent[0] + spent[1] + spent[2] + spent[5] + spent[6]
    return 100.0 * (spent[0] + spent[1]) / busy if busy else float("nan")


def one_round(running, w, secs):
    """One timed run, with a latecomer probing it (bench/probe.py): a
    Round, or a failed result."""
    ticks = core_ticks()
    if w.get("kind") == "h2":
        # No latecomer: the probe speaks HTTP/1.1; h2load reports no p99.
        rps, errors, _, _ = h2load(running.port, w, seconds=secs, cpus=client_cpus(w))
        if errors < 0:
            return {"status": "failed", "why": "streams left unanswered (h2load timed out)"}
        if errors or not rps:
            return {"status": "failed", "why": f"{errors} errors" if errors else "no responses"}
        after = core_ticks()
        return Round(rps, None, float("nan"), steal_pct(ticks, after), server_user_pct(ticks, after))
    probe = start_probe(running.port, w, secs)
    if w.get("kind") == "slow_mixed":
        sample = slow_mixed_round(running.port, secs)
    else:
        rps, p99, errors, _ = wrk(running.port, secs, 64, w.get("env", {}), path=w.get("path", "/"),
                                  cpus=client_cpus(w), threads=w.get("wrk_threads", 1), tls=w.get("tls", False))
        if errors or not rps:
            sample = {"status": "failed", "why": f"{errors} errors" if errors else "no responses"}
        else:
            sample = (rps, p99)
    waited = json.loads(probe.communicate(timeout=secs + 60)[0] or "{}").get("worst_ms", float("nan"))
    if isinstance(sample, dict):
        return sample
    after = core_ticks()
    return Round(*sample, waited, steal_pct(ticks, after), server_user_pct(ticks, after))


def least_robbed_round(running, w, secs, retries, label):
    """one_round, run again while the host's steal is above STEAL_LIMIT_PCT
    (at most `retries` more times): the attempt with the least steal."""
    kept = None
    for attempt in range(1 + retries):
        if attempt:
            time.sleep(STEAL_PAUSE_S)
        sample = one_round(running, w, secs)
        print(f"{label}: {fmt_round(sample)}", flush=True)
        if isinstance(sample, dict):
            return sample
        if kept is None or sample.steal_pct < kept.steal_pct:
            kept = sample
        if sample.steal_pct <= STEAL_LIMIT_PCT:
            break
    return kept


def start_probe(port, w, secs):
    env = w.get("env", {})
    cmd = pin(client_cpus(w) or "1") + [sys.executable, str(BENCH / "probe.py"), str(port), w.get("path", "/"),
                                        str(secs)]
    if env.get("WRK_METHOD") == "POST":
        cmd += ["--post", env.get("WRK_BODY_LEN", "0")]
    if env.get("WRK_CLOSE"):
        cmd += ["--close"]
    if w.get("tls"):
        cmd += ["--tls"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def run_workload(w, servers, secs, rounds, warmup, retries):
    """Every server's result for one workload. All of them are started
    together (idle, they cost nothing) and the timed rounds alternate
    between them, so that drift in the machine's speed over the minutes of a
    cell falls on every server alike instead of on whichever ran last."""
    results, running = {}, {}
    try:
        for server in servers:
            r, failed = start_server(server, w)
            if failed:
                results[server] = failed
            else:
                running[server] = r
        if w.get("kind") == "rss":
            for server, r in running.items():
                for _ in range(20):
                    wait_ready(r.port, r.proc)
                time.sleep(0.5)
                results[server] = {"status": "ok", "rss_kib": process_tree_rss(r.proc.pid)}
            return results
        if w.get("kind") != "slow_mixed":
            for server in list(running):
                failed = verify(running[server], w, warmup)
                if failed:
                    results[server] = failed
                    running.pop(server).stop()
        samples = {server: [] for server in running}
        for i in range(rounds):
            order = list(running)
            order = order[i % len(order):] + order[:i % len(order)] if order else order
            for server in order:
                # Every attempt is printed, so that a median dragged by the
                # machine's noise in one round can be told from a server's own.
                sample = least_robbed_round(running[server], w, secs, retries,
                                            f"{w['name']:>16} {server:>9}  round {i + 1}")
                if isinstance(sample, dict):
                    results[server] = sample
                    running.pop(server).stop()
                    samples.pop(server)
                else:
                    samples[server].append(sample)
        for server, taken in samples.items():
            p99s = [r.p99_ms for r in taken if r.p99_ms is not None]
            results[server] = {"status": "ok", "rps": statistics.median(r.rps for r in taken),
                               "p99_ms": statistics.median(p99s) if p99s else float("nan"),
                               "latecomer_ms": max(r.latecomer_ms for r in taken),
                               "steal_pct": max(r.steal_pct for r in taken),
                               "user_pct": statistics.median(r.user_pct for r in taken)}
        return results
    finally:
        for r in running.values():
            r.stop()


def slow_mixed_round(port, secs):
    """Nine connections of fast requests and one of requests that sleep 50 ms,
    at once; the fast ones' throughput and p99."""
    slow = subprocess.Popen(
        ["taskset", "-c", "1", "wrk", "-t1", "-c1", f"-d{secs}s", f"http://127.0.0.1:{port}/slow"],
        stdout=subprocess.PIPE, text=True,
    )
    rps, p99, errors, _ = wrk(port, secs, 9, {})
    slow_out = slow.communicate(timeout=secs + 60)[0]
    errors += parse_wrk(slow_out)[2]
    if errors or not rps:
        return {"status": "failed", "why": f"{errors} errors" if errors else "no responses"}
    return rps, p99


def fmt_round(sample):
    if isinstance(sample, dict):
        return f"failed ({sample.get('why', '')})"
    rps, p99, waited, stolen, user = sample
    p99_text = f", p99 {p99:.2f} ms" if p99 is not None else ""
    waited_text = f", latecomer waited {waited:.0f} ms" if not math.isnan(waited) else ""
    return (f"{rps:,.0f} req/s{p99_text}{waited_text}, steal {stolen:.1f}%, "
            f"server core {user:.0f}% in user space")


def fmt_cell(r):
    if r["status"] == "n/a":
        return "n/a"
    if r["status"] != "ok":
        return f"failed ({r.get('why', '')})"
    if "rss_kib" in r:
        return f"{r['rss_kib'] / 1024:.1f} MiB"
    cell = f"{r['rps']:,.0f} req/s"
    if not math.isnan(r["p99_ms"]):
        cell += f", p99 {r['p99_ms']:.2f} ms"
    if starves(r):
        cell += f" (a latecomer waited {r['latecomer_ms'] / 1000:.1f} s)"
    if r.get("steal_pct", 0) > STEAL_LIMIT_PCT:
        cell += f" (steal {r['steal_pct']:.0f}%)"
    return cell


def starves(r):
    """True when the latecomer (bench/probe.py) waited longer than wrk's own
    timeout: the server left connections unanswered, and its p99 is that of
    the connections it chose to serve, not of its clients."""
    return r.get("latecomer_ms", 0) >= STARVED_MS


def verdict(w, results):
    """(ratio text, met) for the workload's target, from this run's cells."""
    kind, need = w["target"]
    if kind == "gateway":
        return gateway_verdict(results, need)
    mine = results.get("ferrule", {})
    if mine.get("status") != "ok":
        return "ferrule failed", False
    peers = {s: r for s, r in results.items() if s not in ("ferrule", "hyper") and r.get("status") == "ok"}
    if not peers:
        return "no peer", False
    if kind == "rss":
        ref = peers.get("bjoern") or min(peers.values(), key=lambda r: r["rss_kib"])
        ratio = mine["rss_kib"] / ref["rss_kib"]
        return f"{ratio:.2f} x bjoern RSS (need <= {need})", ratio <= need
    # A peer that left clients unanswered has no p99 to compare with.
    fair = [r["p99_ms"] for r in peers.values() if not starves(r)]
    best_p99 = min(fair) if fair else float("inf")
    if starves(mine):
        return "ferrule left a latecomer unanswered", False
    if kind == "p99":
        best = best_p99
        return f"fast p99 {mine['p99_ms']:.2f} ms vs best {best:.2f} ms", mine["p99_ms"] <= best
    if kind == "bjoern" and "bjoern" in peers:
        ref_name, ref = "bjoern", peers["bjoern"]
    else:
        ref_name, ref = max(peers.items(), key=lambda kv: kv[1]["rps"])
    ratio = mine["rps"] / ref["rps"]
    if math.isnan(mine["p99_ms"]):
        # No p99 to compare (h2load reports none): throughput alone.
        return f"{ratio:.2f} x {ref_name} (need >= {need})", ratio >= need
    text = f"{ratio:.2f} x {ref_name} (need >= {need}); p99 {mine['p99_ms']:.2f} vs best {best_p99:.2f} ms"
    met = ratio >= need and mine["p99_ms"] <= best_p99
    if w["name"] == "hello" and results.get("hyper", {}).get("status") == "ok":
        ceiling = mine["rps"] / results["hyper"]["rps"]
        text += f"; {ceiling:.2f} x hyper (need >= 0.8)"
        met = met and ceiling >= 0.8
    return text, met


def gateway_verdict(results, need):
    """ferrule over uwsgi against uWSGI over uwsgi and against ferrule over
    HTTP behind the same nginx: both at least `need`."""
    mine = results.get("ferrule-uwsgi", {})
    if mine.get("status") != "ok":
        return "ferrule over uwsgi failed", False
    texts, met = [], True
    for ref in ("uwsgi-uwsgi", "ferrule-http"):
        other = results.get(ref, {})
        if other.get("status") != "ok":
            texts.append(f"{ref} failed")
            met = False
            continue
        ratio = mine["rps"] / other["rps"]
        texts.append(f"{ratio:.2f} x {ref}")
        met &= ratio >= need
    return "; ".join(texts) + f" (need >= {need})", met


def scaling_lines(all_results):
    """Report lines: each server's requests/s per server core in the scaling
    cell, against its one-core hello cell (how much of a core each worker
    adds)."""
    scaled, single = all_results.get("hello_scaling"), all_results.get("hello")
    if not scaled:
        return []
    lines = ["", f"Scaling: {SCALE_WORKERS} worker(s) on {SCALE_WORKERS} of {CORES} cores, wrk on the rest:", ""]
    for server, r in scaled.items():
        if r.get("status") != "ok":
            continue
        per_core = r["rps"] / SCALE_WORKERS
        one = (single or {}).get(server, {})
        versus = f", {per_core / one['rps']:.2f} x its one-core hello cell" if one.get("status") == "ok" else ""
        lines.append(f"- {server}: {per_core:,.0f} req/s per core{versus}")
    return lines


def user_space_table(workloads, servers, all_results):
    """Report lines: of the server core's busy time, the share in user space
    (median of the kept rounds). Where it is small the cell is the
    kernel's: no server code can make it much faster."""
    rows = []
    for w in workloads:
        if w.get("kind") in ("rss", "slow_mixed", "gateway", "static") or not w.get("pinned", True):
            continue
        res = all_results[w["name"]]
        cells = [f"{res[s]['user_pct']:.0f}%" if "user_pct" in res[s] else "" for s in servers]
        rows.append(f"| {w['name']} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    return ["", "Share of the server core's busy time spent in user space (the rest is the kernel's):", "",
            "| workload | " + " | ".join(servers) + " |", "|---" * (len(servers) + 1) + "|", *rows]


def chart(all_results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = [w["name"] for w in WORKLOADS
             if w.get("kind") not in ("rss", "gateway", "static") and w["name"] in all_results]
    servers = [s for s in SERVER_ORDER if s != "hyper" and any(s in r for r in all_results.values())]
    if not names or not servers:
        return False
    fig, ax = plt.subplots(figsize=(14, 5))
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        ratios = []
        for name in names:
            res = all_results[name]
            mine, other = res.get("ferrule", {}), res.get(server, {})
            if mine.get("status") == "ok" and other.get("status") == "ok" and mine.get("rps"):
                ratios.append(other["rps"] / mine["rps"])
            else:
                ratios.append(0)
        ax.bar([x + i * width for x in range(len(names))], ratios, width, label=server)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(names))])
    ax.set_xticklabels(names, rotation=20)
    ax.set_ylabel("throughput / ferrule's (same run)")
    ax.set_title("ferrule and its peers, one core each (higher than 1 = faster than ferrule)")
    ax.legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


def versions():
    out = {}
    for pkg in ("granian", "gunicorn", "pyuwsgi", "bjoern-binary", "waitress", "fastwsgi"):
        try:
            line = subprocess.run([str(PEERS / "python"), "-m", "pip", "show", pkg], capture_output=True,
                                  text=True).stdout
            out[pkg] = re.search(r"^Version: (.+)$", line, re.M).group(1)
        except (AttributeError, OSError):
            out[pkg] = "?"
    out["ferrule"] = subprocess.run([str(FERRULE), "--version"], capture_output=True, text=True).stdout.split()[-1]
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="every cell for one second (file: three)")
    parser.add_argument("--only", help="comma-separated workloads")
    parser.add_argument("--servers", help="comma-separated servers")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # A smoke run proves the harness, not speeds: no round is run again.
    secs, rounds, warmup, retries = (1, 1, 1, 0) if args.smoke else (args.seconds, args.rounds, 1, STEAL_RETRIES)
    workloads = [w for w in WORKLOADS if not args.only or w["name"] in args.only.split(",")]
    servers = [s for s in SERVER_ORDER if not args.servers or s in args.servers.split(",")]
    RESULTS.mkdir(exist_ok=True)
    gateway_servers = [v for v in GATEWAY_SERVERS if not args.servers or v.rsplit("-", 1)[0] in servers]
    static_servers = [s for s in STATIC_SERVERS if not args.servers or s in args.servers.split(",")]
    servers_of = {"gateway": gateway_servers, "static": static_servers}
    all_results = {}
    for w in workloads:
        cell_secs = max(secs, w.get("smoke_seconds", 0)) if args.smoke else secs
        cell_servers = servers_of.get(w.get("kind"), servers)
        results = run_workload(w, cell_servers, cell_secs, rounds, warmup, retries)
        all_results[w["name"]] = {server: results[server] for server in cell_servers}
        for server in cell_servers:
            print(f"{w['name']:>16} {server:>9}: {fmt_cell(results[server])}", flush=True)

    stamp = datetime.date.today().isoformat()
    lines = [
        f"# ferrule benchmarks, {stamp}{' (smoke: 1 s cells, not numbers to quote)' if args.smoke else ''}",
        "",
        f"Machine: {os.cpu_count()} cores, {platform.machine()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}. Servers pinned to core 0, wrk to core 1; "
        f"median of {rounds} x {secs} s rounds, alternating between the servers, after a {warmup} s "
        "warm-up and a verified run. A latecomer client (bench/probe.py) joins each timed round; a "
        f"server that left it waiting over {STARVED_MS / 1000:.0f} s is marked, and its p99 (of the "
        "connections it chose to serve) is not compared. A round during which the host took more than "
        f"{STEAL_LIMIT_PCT:.0f}% of either core (steal time) is run again, up to {retries} times, "
        "and the least robbed attempt kept; a cell whose kept rounds were robbed more says so.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
        "",
    ]
    if any(w.get("kind") not in servers_of for w in workloads):
        lines += ["| workload | " + " | ".join(servers) + " | ferrule vs target | met |",
                  "|---" * (len(servers) + 3) + "|"]
    met_all = True
    gateway_rows, static_rows = [], []
    for w in workloads:
        res = all_results[w["name"]]
        text, met = verdict(w, res)
        met_all &= met
        row_servers = servers_of.get(w.get("kind"), servers)
        row = (f"| {w['name']} | " + " | ".join(fmt_cell(res[s]) for s in row_servers)
               + f" | {text} | {'yes' if met else 'no'} |")
        {"gateway": gateway_rows, "static": static_rows}.get(w.get("kind"), lines).append(row)
    if static_rows:
        lines += ["", "Static files (`--static`), one core each (core 0), wrk on core 1:", "",
                  "| workload | " + " | ".join(static_servers) + " | ferrule vs target | met |",
                  "|---" * (len(static_servers) + 3) + "|", *static_rows]
    if gateway_rows:
        lines += ["", "Behind nginx (one worker, core 1 with wrk), over a unix socket; the server on core 0:", "",
                  "| workload | " + " | ".join(gateway_servers) + " | ferrule vs target | met |",
                  "|---" * (len(gateway_servers) + 3) + "|", *gateway_rows]
    lines += scaling_lines(all_results)
    lines.append("")
    lines.append(f"Every target met: {'yes' if met_all else 'no'}.")
    lines += user_space_table(workloads, servers, all_results)
    name = stamp + ("-smoke" if args.smoke else "") + ("-partial" if args.only or args.servers else "")
    report = RESULTS / f"{name}.md"
    png = RESULTS / f"{name}.png"
    if chart(all_results, png):
        lines += ["", f"![ratios]({png.name})"]
    report.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {report}")
    ferrule_failed = [n for n, res in all_results.items() if res.get("ferrule", {}).get("status") == "failed"]
    if ferrule_failed:
        print(f"ferrule failed in: {', '.join(ferrule_failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
