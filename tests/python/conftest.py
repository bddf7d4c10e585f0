"""Starts the real ferrule process and talks to it over sockets.

Every server is started on port 0 (or a unix socket) and is ready when it
prints its "Listening at:" line; no test sleeps to wait for it. Processes are
ended by PID.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"
FERRULE = str(Path(sys.executable).parent / "ferrule")
LISTENING = re.compile(r"Listening at: (\S+) \(pid (\d+)\)")


class Server:
    """A running ferrule process."""

    def __init__(self, app, *args, env=None, cwd=APPS, bind=None, expect_ready=True, listeners=1,
                 preexec_fn=None, wrapper=()):
        # app None: the APP comes from a config file (wsgi_app). `wrapper`
        # runs ferrule under another program (strace).
        self.args = [*wrapper, FERRULE, *([app] if app else []), *args]
        if bind is None:
            bind = ["127.0.0.1:0"]
        for b in bind:
            self.args += ["-b", b]
        full_env = dict(os.environ)
        full_env.pop("PORT", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            self.args,
            cwd=str(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=preexec_fn,
        )
        self.lines = []
        self.out_lines = []
        self.urls = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        # Read too, so that a full pipe never blocks the server (the access
        # log's "-" is stdout).
        self._out_reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._out_reader.start()
        if expect_ready:
            self.wait_for(lambda: len(self.urls) >= listeners, what="the 'Listening at:' line")

    def _read_stderr(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace")
            with self._cond:
                self.lines.append(line)
                m = LISTENING.search(line)
                if m:
                    self.urls.append(m.group(1))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _read_stdout(self):
        for raw in self.proc.stdout:
            with self._cond:
                self.out_lines.append(raw.decode("utf-8", "replace"))
                self._cond.notify_all()

    @property
    def stdout(self):
        with self._cond:
            return "".join(self.out_lines)

    def wait_for_stdout(self, text, timeout=20):
        self.wait_for(lambda: text in "".join(self.out_lines), timeout, what=f"{text!r} on stdout")

    def wait_for(self, predicate, timeout=20, what="a condition"):
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not predicate()):
                    if self.proc.poll() is not None:
                        self._reader.join(2)
                        if predicate():
                            return
                    raise AssertionError(f"timed out waiting for {what}; log:\n{self.log}")
                self._cond.wait(min(left, 0.1))

    def wait_for_log(self, text, timeout=20):
        self.wait_for(lambda: text in self.log, timeout, what=repr(text))

    @property
    def log(self):
        with self._cond:
            return "".join(self.lines)

    @property
    def url(self):
        return self.urls[0]

    @property
    def port(self):
        return int(self.url.rsplit(":", 1)[1])

    @property
    def address(self):
        return ("127.0.0.1", self.port)

    def connect(self, timeout=10):
        sock = socket.create_connection(self.address, timeout=timeout)
        return sock

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        return code

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve():
    """serve(app, *args, **kw) -> a started Server, stopped after the test."""
    started = []

    def start(app, *args, **kwargs):
        server = Server(app, *args, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def run_ferrule(*args, cwd=APPS, env=None, timeout=30):
    """Runs ferrule to completion (for start-up failures); returns the result.
    Without a bind of its own, it gets a free port, so that tests running at
    once do not race for the default 127.0.0.1:8000."""
    full_env = dict(os.environ)
    full_env.pop("PORT", None)
    full_env.update(env or {})
    if not any(a in ("-b", "--bind") or a.startswith("--bind=") for a in args) and "FERRULE_BIND" not in full_env:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            full_env["FERRULE_BIND"] = f"127.0.0.1:{s.getsockname()[1]}"
    return subprocess.run(
        [FERRULE, *args], cwd=str(cwd), env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


# --- processes ---------------------------------------------------------------

def children(pid):
    """The live child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


def listening_line(proc):
    """The first "Listening at:" line of a process started with
    stderr=PIPE (the lines before it, such as the start banner, skipped)."""
    for raw in proc.stderr:
        line = raw.decode()
        if "Listening at: " in line:
            return line
    raise AssertionError("the process ended before its 'Listening at:' line")


def wait_until(predicate, timeout=20, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def worker_pids(server, n, timeout=30):
    try:
        wait_until(lambda: len(children(server.proc.pid)) == n, timeout, what=f"{n} workers")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; log:\n{server.log}") from None
    return children(server.proc.pid)


def signals_pending(pid):
    """The signal numbers waiting to be delivered to `pid` (to the process
    or to any of its threads), from /proc; empty once the process is gone."""
    masks = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("SigPnd:", "ShdPnd:")):
                    masks |= int(line.split()[1], 16)
    except (FileNotFoundError, ProcessLookupError):
        pass
    return {n + 1 for n in range(64) if masks >> n & 1}


def tcp_table():
    """The TCP sockets of this network namespace, from /proc/net/tcp{,6}:
    {(local port, remote port): (state, tx_queue, rx_queue, inode)}."""
    table = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state = fields[1], fields[2], fields[3]
            tx, rx = (int(x, 16) for x in fields[4].split(":"))
            key = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
            table[key] = (int(state, 16), tx, rx, int(fields[9]))
    return table


def socket_inodes(pid):
    """The inodes of the sockets process `pid` holds open."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return inodes


TCP_ESTABLISHED = 1


def connections_held(pid, port):
    """How many established connections to local `port` process `pid` has
    accepted and holds open."""
    inodes = socket_inodes(pid)
    return sum(
        1 for (local, _), (state, _, _, inode) in tcp_table().items()
        if local == port and state == TCP_ESTABLISHED and inode in inodes
    )


def server_has_read(server, sock):
    """True once one of `server`'s workers has accepted the connection
    `sock` and read every byte the client has sent on it so far."""
    client_port = sock.getsockname()[1]
    table = tcp_table()
    client = table.get((client_port, server.port))
    accepted = table.get((server.port, client_port))
    if client is None or accepted is None:
        return False
    held = set().union(*(socket_inodes(p) for p in children(server.proc.pid)))
    _, client_unsent, _, _ = client
    _, _, server_unread, inode = accepted
    return inode in held and client_unsent == 0 and server_unread == 0



# --- raw HTTP helpers -------------------------------------------------------

class Response:
    def __init__(self, status, reason, version, headers, body, raw):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers  # list of (name, value), order kept
        self.body = body
        self.raw = raw

    def header(self, name):
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        return values[0] if values else None

    def __repr__(self):
        return f"<Response {self.status} {self.headers} {self.body[:80]!r}>"


class Reader:
    """Reads HTTP responses off a socket, leaving later bytes for the next."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""
        self.eof = False

    def _more(self):
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        self.buf += data
        return bool(data)

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._more():
                raise EOFError(f"connection closed mid-line: {self.buf!r}")
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exactly(self, n):
        while len(self.buf) < n:
            if not self._more():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, head_request=False):
        start = len(self.buf)
        status_line = self._line()
        version, status, reason = (status_line.decode("latin-1").split(" ", 2) + [""])[:3]
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        resp = Response(int(status), reason, version, headers, b"", None)
        status = int(status)
        if head_request or status in (204, 304) or 100 <= status < 200:
            return resp
        te = resp.header("Transfer-Encoding")
        cl = resp.header("Content-Length")
        if te and te.lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._exactly(size)
                assert self._exactly(2) == b"\r\n"
            resp.body = body
        elif cl is not None:
            resp.body = self._exactly(int(cl))
        else:
            while self._more():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def closed(self, timeout=5):
        """True when the server closes the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    return True
                self.buf += data
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False


def send_in_pieces(sock, data, mode, seed=0):
    """Sends data whole, line by line, byte by byte or in random splits."""
    import random

    if mode == "whole":
        sock.sendall(data)
    elif mode == "lines":
        parts = data.split(b"\n")
        for i, piece in enumerate(parts):
            chunk = piece + (b"\n" if i < len(parts) - 1 else b"")
            if chunk:
                sock.sendall(chunk)
    elif mode == "bytes":
        for i in range(len(data)):
            sock.sendall(data[i:i + 1])
    elif mode == "random":
        rnd = random.Random(seed)
        i = 0
        while i < len(data):
            n = rnd.randint(1, 7)
            sock.sendall(data[i:i + n])
            i += n
    else:
        raise ValueError(mode)


SPLIT_MODES = ["whole", "lines", "bytes", "random"]


def exchange(server, data, mode="whole", head_request=False, timeout=10):
    """Sends raw bytes on a new connection and reads one response."""
    with server.connect(timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        send_in_pieces(sock, data, mode)
        return Reader(sock).read_response(head_request=head_request)
