"""Real front ends for the gateway tests: nginx (and later Apache httpd and
lighttpd) started as ordinary processes with their own configuration files
(tests/python/frontends/) on loopback, in front of ferrule on unix sockets."""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

FRONTENDS = Path(__file__).resolve().parent / "frontends"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port, proc, log, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the front end exited with {proc.returncode}:\n{log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the front end did not listen on {port}:\n{log()}")


class Nginx:
    """nginx from Debian's package, with frontends/nginx.conf filled in."""

    def __init__(self, prefix, **upstreams):
        if shutil.which("nginx") is None:
            raise AssertionError("nginx is not installed (scripts/setup.sh installs it)")
        self.prefix = Path(prefix)
        self.port = free_port()
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        text = (FRONTENDS / "nginx.conf").read_text().format(
            port=self.port,
            prefix=self.prefix,
            user="user root;" if os.geteuid() == 0 else "",
            **{f"upstream_{k}": v for k, v in upstreams.items()},
        )
        self.conf = self.prefix / "nginx.conf"
        self.conf.write_text(text)
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.prefix), "-c", str(self.conf), "-e", str(self.prefix / "error.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.proc, self.log)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        path = self.prefix / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def uwsgi_packet(variables, body=b"", modifier1=0):
    """A uwsgi request: the 4-byte header, the variables, the body."""
    block = b""
    for name, value in variables.items():
        for part in (name.encode("latin-1"), value.encode("latin-1")):
            block += len(part).to_bytes(2, "little") + part
    return bytes([modifier1]) + len(block).to_bytes(2, "little") + b"\0" + block + body


def scgi_netstring(pairs):
    """The netstring of (name, value) pairs exactly as given."""
    block = b"".join(k.encode("latin-1") + b"\0" + v.encode("latin-1") + b"\0" for k, v in pairs)
    return str(len(block)).encode() + b":" + block + b","


def scgi_packet(variables, body=b""):
    """An SCGI request: CONTENT_LENGTH first, SCGI=1, as a netstring."""
    items = {"CONTENT_LENGTH": str(len(body)), "SCGI": "1", **variables}
    return scgi_netstring(items.items()) + body


def send_raw(address, data, timeout=10):
    """Sends raw bytes on a new connection (a unix socket path or a
    (host, port)), half-closes it, and reads until the server closes it."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(data)
        # Done sending: a request cut short ends here.
        sock.shutdown(socket.SHUT_WR)
        out = b""
        try:
            while True:
                block = sock.recv(65536)
                if not block:
                    return out
                out += block
        except ConnectionResetError:
            return out
