"""Real front ends for the gateway tests: nginx (and later Apache httpd and
lighttpd) started as ordinary processes with their own configuration files
(tests/python/frontends/) on loopback, in front of ferrule on unix sockets."""

import os
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
        try:
            sock.sendall(data)
            # Done sending: a request cut short ends here.
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            # The server closed first (a refused peer): read what it said.
            pass
        out = b""
        try:
            while True:
                block = sock.recv(65536)
                if not block:
                    return out
                out += block
        except ConnectionResetError:
            return out


# --- FastCGI (the FastCGI Specification 1.0) ---------------------------------

FCGI_BEGIN_REQUEST, FCGI_ABORT_REQUEST, FCGI_END_REQUEST, FCGI_PARAMS, FCGI_STDIN, FCGI_STDOUT = 1, 2, 3, 4, 5, 6
FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_UNKNOWN_TYPE = 9, 10, 11


def fcgi_record(kind, request_id, content=b"", padding=0):
    return (bytes([1, kind]) + request_id.to_bytes(2, "big") + len(content).to_bytes(2, "big")
            + bytes([padding, 0]) + content + b"\0" * padding)


def fcgi_pairs(variables):
    out = b""
    for name, value in variables.items():
        name, value = name.encode("latin-1"), value.encode("latin-1")
        for n in (len(name), len(value)):
            out += bytes([n]) if n < 128 else (n | 0x80000000).to_bytes(4, "big")
        out += name + value
    return out


def fcgi_request(request_id, variables, body=b"", keep_conn=False, role=1):
    """BEGIN_REQUEST, the PARAMS stream, the STDIN stream."""
    out = fcgi_record(FCGI_BEGIN_REQUEST, request_id, role.to_bytes(2, "big") + bytes([int(keep_conn)]) + b"\0" * 5)
    out += fcgi_record(FCGI_PARAMS, request_id, fcgi_pairs(variables)) + fcgi_record(FCGI_PARAMS, request_id)
    for i in range(0, len(body), 65535):
        out += fcgi_record(FCGI_STDIN, request_id, body[i:i + 65535], padding=(-len(body[i:i + 65535])) % 8)
    return out + fcgi_record(FCGI_STDIN, request_id)


def fcgi_records(data):
    """Splits bytes into (type, request id, content) records."""
    records = []
    while len(data) >= 8:
        length = int.from_bytes(data[4:6], "big")
        padding = data[6]
        if len(data) < 8 + length + padding:
            break
        records.append((data[1], int.from_bytes(data[2:4], "big"), data[8:8 + length]))
        data = data[8 + length + padding:]
    return records


class FcgiReader:
    """Reads FastCGI responses off a kept connection."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def record(self):
        while True:
            if len(self.buf) >= 8:
                length = int.from_bytes(self.buf[4:6], "big")
                total = 8 + length + self.buf[6]
                if len(self.buf) >= total:
                    rec = (self.buf[1], int.from_bytes(self.buf[2:4], "big"), self.buf[8:8 + length])
                    self.buf = self.buf[total:]
                    return rec
            block = self.sock.recv(65536)
            if not block:
                raise EOFError("connection closed")
            self.buf += block

    def response(self, request_id):
        """(stdout bytes, END_REQUEST content) of one request."""
        stdout = b""
        while True:
            kind, rid, content = self.record()
            if rid != request_id:
                continue
            if kind == FCGI_STDOUT:
                stdout += content
            elif kind == FCGI_END_REQUEST:
                return stdout, content


class _FrontEnd:
    """A front end from Debian's package, started in the foreground with a
    configuration file from frontends/ filled in."""

    conf_name = None

    def __init__(self, prefix, argv, **fields):
        self.prefix = Path(prefix)
        self.prefix.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        text = (FRONTENDS / self.conf_name).read_text().format(port=self.port, prefix=self.prefix, **fields)
        self.conf = self.prefix / self.conf_name
        self.conf.write_text(text)
        self.proc = subprocess.Popen(
            [part.format(conf=self.conf) for part in argv],
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


class Lighttpd(_FrontEnd):
    """lighttpd with mod_fastcgi and mod_scgi to ferrule's unix sockets, and
    mod_cgi running `ferrule --cgi` (frontends/app.cgi)."""

    conf_name = "lighttpd.conf"

    def __init__(self, prefix, fastcgi, scgi, ferrule, apps):
        cgi_dir = Path(prefix) / "cgi"
        cgi_dir.mkdir(parents=True, exist_ok=True)
        script = cgi_dir / "app.cgi"
        script.write_text((FRONTENDS / "app.cgi").read_text().format(ferrule=ferrule, apps=apps, app="gateway_app"))
        script.chmod(0o755)
        super().__init__(prefix, ["lighttpd", "-D", "-f", "{conf}"], upstream_fastcgi=fastcgi,
                         upstream_scgi=scgi, cgi_dir=cgi_dir)


class Apache(_FrontEnd):
    """Apache httpd with mod_proxy_uwsgi, mod_proxy_fcgi and mod_proxy_scgi
    to ferrule on loopback TCP (its workers run as www-data, which cannot
    reach root's unix sockets)."""

    conf_name = "apache.conf"

    def __init__(self, prefix, uwsgi_port, fastcgi_port, scgi_port):
        super().__init__(prefix, ["apache2", "-f", "{conf}", "-DFOREGROUND"], uwsgi_port=uwsgi_port,
                         fastcgi_port=fastcgi_port, scgi_port=scgi_port)


class Nginx(_FrontEnd):
    """nginx from Debian's package, with frontends/nginx.conf filled in."""

    conf_name = "nginx.conf"
    UPSTREAMS = ("uwsgi", "scgi", "fastcgi", "http")

    def __init__(self, prefix, **upstreams):
        """`upstreams` maps each of UPSTREAMS to ferrule's socket path; a
        location whose upstream is not given answers 502."""
        prefix = Path(prefix)
        for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / sub).mkdir(parents=True, exist_ok=True)
        fields = {f"upstream_{k}": upstreams.get(k, str(prefix / "absent.sock")) for k in self.UPSTREAMS}
        super().__init__(prefix, ["nginx", "-p", str(prefix), "-c", "{conf}", "-e", str(prefix / "error.log")],
                         user="user root;" if os.geteuid() == 0 else "", **fields)
