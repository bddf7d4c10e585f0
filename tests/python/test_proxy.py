"""Behind a proxy: the scheme the client used, told by X-Forwarded-Proto,
X-Forwarded-Protocol, X-Forwarded-Ssl or Forwarded, is taken from trusted
peers only (gunicorn's forwarded_allow_ips and secure_scheme_headers), and
a unix socket's default mode lets an nginx running as another user connect.
nginx is a real process with its own configuration file."""

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile

import httpx
import pytest

from pathlib import Path

from conftest import Reader, Server, children, exchange, send_in_pieces
from gateways import FRONTENDS, free_port, wait_for_port

SCHEME_HEADERS = [
    b"X-Forwarded-Proto: https",
    b"X-Forwarded-Protocol: ssl",
    b"X-Forwarded-Ssl: on",
]


def environ_for(server, header=b""):
    extra = header + b"\r\n" if header else b""
    resp = exchange(server, b"GET /env HTTP/1.1\r\nHost: example.org\r\n" + extra + b"\r\n")
    assert resp.status == 200
    return json.loads(resp.body)


@pytest.mark.parametrize("header", SCHEME_HEADERS, ids=lambda h: h.split(b":")[0].decode())
def test_trusted_peer_sets_the_scheme(serve, header):
    server = serve("echo")
    env = environ_for(server, header)
    assert env["wsgi.url_scheme"] == "https"
    assert env["SERVER_PORT"] == "443", "a Host without a port means 443 under https"


@pytest.mark.parametrize("header", [b"X-Forwarded-Proto: http", b"X-Forwarded-Ssl: off",
                                    # Not in gunicorn's list: a proxy that does not set
                                    # Forwarded passes a client's on.
                                    b"Forwarded: for=192.0.2.1;proto=https"])
def test_other_values_leave_http(serve, header):
    env = environ_for(serve("echo"), header)
    assert env["wsgi.url_scheme"] == "http" and env["SERVER_PORT"] == "80"


def test_forwarded_proto_when_configured(serve):
    """RFC 7239's Forwarded: proto=, when --secure-scheme-headers names it:
    read in the last element, the one the nearest proxy appended."""
    server = serve("echo", "--secure-scheme-headers", "X-Forwarded-Proto=https,Forwarded=https")
    assert environ_for(server, b"Forwarded: for=192.0.2.1;proto=https")["wsgi.url_scheme"] == "https"
    assert environ_for(server, b"Forwarded: proto=https, for=192.0.2.9;proto=http")["wsgi.url_scheme"] == "http"
    assert environ_for(server, b"X-Forwarded-Proto: https")["wsgi.url_scheme"] == "https"


def test_untrusted_peer_changes_nothing(serve):
    server = serve("echo", "--forwarded-allow-ips", "10.0.0.0/8")
    for header in SCHEME_HEADERS:
        env = environ_for(server, header)
        assert env["wsgi.url_scheme"] == "http", header
    # The header itself still reaches the application, as sent.
    assert environ_for(server, SCHEME_HEADERS[0])["HTTP_X_FORWARDED_PROTO"] == "https"


def test_any_peer_with_a_star(serve):
    server = serve("echo", "--forwarded-allow-ips", "*")
    assert environ_for(server, SCHEME_HEADERS[0])["wsgi.url_scheme"] == "https"


def test_unix_socket_file_mode(serve, tmp_path):
    default = tmp_path / "default.sock"
    serve("echo", bind=[f"unix:{default}"])
    assert stat.S_IMODE(os.stat(default).st_mode) == 0o777
    narrowed = tmp_path / "narrowed.sock"
    serve("echo", "--umask", "007", bind=[f"unix:{narrowed}"])
    assert stat.S_IMODE(os.stat(narrowed).st_mode) == 0o770
    # uWSGI's chmod-socket: the socket file's mode only, not the process's umask.
    chmodded = tmp_path / "chmodded.sock"
    server = serve("echo", "--chmod-socket", "660", bind=[f"unix:{chmodded}"])
    assert stat.S_IMODE(os.stat(chmodded).st_mode) == 0o660
    ours = os.umask(0)
    os.umask(ours)
    status = Path(f"/proc/{server.proc.pid}/status").read_text()
    assert f"Umask:\t{ours:04o}" in status


@contextlib.contextmanager
def nginx_in_front(tmp_path, app, *args, env=None):
    """nginx in front of `app` over a unix socket and over TCP, its workers
    running as nobody when the tests run as root. The socket lives in a
    directory anyone may enter (pytest's own are root's only), so only the
    socket file's mode decides."""
    run_dir = tempfile.mkdtemp(prefix="ferrule-proxy-")
    os.chmod(run_dir, 0o755)
    sock = os.path.join(run_dir, "app.sock")
    server = Server(app, *args, bind=[f"unix:{sock}", "127.0.0.1:0"], listeners=2, env=env)
    tcp_port = int(server.urls[1].rsplit(":", 1)[1])
    prefix = tmp_path / "nginx"
    for sub in ("body", "proxy"):
        (prefix / sub).mkdir(parents=True)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text((FRONTENDS / "nginx-proxy.conf").read_text().format(
        port=port, prefix=prefix, user="user nobody nogroup;" if os.geteuid() == 0 else "",
        upstream_unix=sock, upstream_tcp_port=tcp_port))
    proc = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, lambda: (prefix / "error.log").read_text())
        yield f"http://127.0.0.1:{port}", prefix, server
    finally:
        proc.terminate()
        proc.wait(10)
        server.kill()
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def nginx_proxy(tmp_path):
    """nginx in front of a Django project."""
    with nginx_in_front(tmp_path, "djsite.wsgi", env={"DJSITE_DB": str(tmp_path / "db.sqlite3")}) as (url, prefix, _):
        yield url, prefix


def test_django_behind_nginx_sees_https(nginx_proxy):
    """Django's is_secure() and build_absolute_uri() are right behind nginx
    with no Django setting, over the README's unix socket (which nginx,
    running as another user, can connect to) and over TCP."""
    url, prefix = nginx_proxy
    for path in ("/secure/", "/tcp/secure/"):
        resp = httpx.get(url + path, headers={"Host": "shop.example"})
        assert resp.status_code == 200, (path, resp.status_code, (prefix / "error.log").read_text()[-2000:])
        assert resp.json() == {"secure": True, "url": "https://shop.example/x/"}


def test_readme_block_is_the_tested_configuration():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("## Behind nginx", 1)[1].split("```nginx\n", 1)[1].split("```", 1)[0]
    conf = (FRONTENDS / "nginx-proxy.conf").read_text().replace("{{", "{").replace("}}", "}")
    conf = conf.replace("{upstream_unix}", "/run/myapp/app.sock")
    assert block.strip() in conf


def test_forwarded_for_sets_the_client_address(serve, tmp_path):
    access = tmp_path / "access.log"
    server = serve("echo", "--forwarded-for", "--access-logfile", str(access))
    env = environ_for(server, b"X-Forwarded-For: 6.6.6.6, 203.0.113.7")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.7", "0")
    env = environ_for(server, b"X-Forwarded-For: [2001:db8::1]:4711")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::1", "4711")
    # A Forwarded field a proxy passed on as the client wrote it names no one.
    env = environ_for(server, b"Forwarded: for=6.6.6.6\r\nX-Forwarded-For: 203.0.113.9")
    assert env["REMOTE_ADDR"] == "203.0.113.9"
    assert environ_for(server, b"Forwarded: for=6.6.6.6")["REMOTE_ADDR"] == "127.0.0.1"
    # An entry that is not an address: the peer stays the client.
    assert environ_for(server, b"X-Forwarded-For: unknown")["REMOTE_ADDR"] == "127.0.0.1"
    assert environ_for(server)["REMOTE_ADDR"] == "127.0.0.1"
    server.stop()
    assert access.read_text().startswith("203.0.113.7 - - [")
    # Off by default, and never from an untrusted peer.
    assert environ_for(serve("echo"), b"X-Forwarded-For: 203.0.113.7")["REMOTE_ADDR"] == "127.0.0.1"
    untrusted = serve("echo", "--forwarded-for", "--forwarded-allow-ips", "10.0.0.0/8")
    assert environ_for(untrusted, b"X-Forwarded-For: 203.0.113.7")["REMOTE_ADDR"] == "127.0.0.1"


def test_forwarded_prefix_sets_script_name(serve):
    server = serve("echo", "--forwarded-prefix")
    env = environ_for(server, b"X-Forwarded-Prefix: /shop/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/shop", "/env")
    assert environ_for(server, b"X-Forwarded-Prefix: /a/../b")["SCRIPT_NAME"] == ""
    assert environ_for(serve("echo"), b"X-Forwarded-Prefix: /shop")["SCRIPT_NAME"] == ""


@pytest.mark.parametrize("conf, header, scheme", [
    ('secure_scheme_headers = {"X-SCHEME": "https"}', b"X-Scheme: https", "https"),
    ('secure_scheme_headers = {"X-SCHEME": "https"}', b"X-Forwarded-Proto: https", "http"),
    ("secure_scheme_headers = {}", b"X-Forwarded-Proto: https", "http"),
])
def test_secure_scheme_headers_from_a_gunicorn_conf(tmp_path, conf, header, scheme):
    (tmp_path / "gunicorn.conf.py").write_text(conf + "\n")
    server = Server("echo", "--chdir", str(Path(__file__).parent / "apps"), cwd=tmp_path)
    try:
        assert environ_for(server, header)["wsgi.url_scheme"] == scheme
    finally:
        server.kill()


def test_client_address_through_real_nginx(tmp_path):
    """A client on 127.0.0.2 sends a forged X-Forwarded-For to nginx, which
    appends the address it saw; ferrule, trusting only nginx (127.0.0.1),
    takes the nearest untrusted address: the real client's."""
    with nginx_in_front(tmp_path, "echo", "--forwarded-for", "--forwarded-allow-ips", "127.0.0.1") as (url, prefix, _):
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as client:
            resp = client.get(url + "/env", headers={"X-Forwarded-For": "203.0.113.66"})
        assert resp.status_code == 200, (prefix / "error.log").read_text()[-2000:]
        env = resp.json()
        assert env["HTTP_X_FORWARDED_FOR"] == "203.0.113.66, 127.0.0.2"
        assert env["REMOTE_ADDR"] == "127.0.0.2"
        assert env["wsgi.url_scheme"] == "https"


# --- the PROXY protocol ------------------------------------------------------

V2_SIGNATURE = b"\r\n\r\n\0\r\nQUIT\n"


def proxy_v2(src, dst, sport, dport, command=1):
    block = socket.inet_aton(src) + socket.inet_aton(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    return V2_SIGNATURE + bytes([0x20 | command, 0x11]) + len(block).to_bytes(2, "big") + block


GET_ENV = b"GET /env HTTP/1.1\r\nHost: example.org\r\nX-Forwarded-Proto: https\r\n\r\n"


def env_over(sock):
    sock.sendall(GET_ENV)
    resp = Reader(sock).read_response()
    assert resp.status == 200, resp
    return json.loads(resp.body)


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 8080\r\n",
    proxy_v2("203.0.113.9", "198.51.100.1", 51000, 8080),
], ids=["v1", "v2"])
@pytest.mark.parametrize("mode", ["whole", "bytes", "random"])
def test_proxy_header_sets_the_client(serve, header, mode):
    server = serve("echo", "--proxy-protocol")
    with server.connect() as sock:
        send_in_pieces(sock, header + GET_ENV, mode)
        env = json.loads(Reader(sock).read_response().body)
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("203.0.113.9", "51000")
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "80")
        # The client is not a trusted proxy: its X-Forwarded-Proto is not taken.
        assert env["wsgi.url_scheme"] == "http"
        # The next request on the connection has no header of its own.
        assert env_over(sock)["REMOTE_ADDR"] == "203.0.113.9"


def test_proxy_local_and_unknown_keep_the_peer(serve):
    server = serve("echo", "--proxy-protocol")
    for header in (proxy_v2("0.0.0.0", "0.0.0.0", 0, 0, command=0), b"PROXY UNKNOWN\r\n"):
        with server.connect() as sock:
            sock.sendall(header)
            assert env_over(sock)["REMOTE_ADDR"] == "127.0.0.1"


@pytest.mark.parametrize("data, reason", [
    (GET_ENV, "the connection does not start with a PROXY header"),
    (b"PROXY TCP4 203.0.113.9 198.51.100.1 51000\r\n" + GET_ENV, "needs source, destination and two ports"),
    (b"PROXY " + b"x" * 120, "longer than 107 bytes"),
])
def test_a_missing_or_malformed_proxy_header_closes(serve, data, reason):
    server = serve("echo", "--proxy-protocol")
    with server.connect() as sock:
        sock.sendall(data)
        assert Reader(sock).closed(), "no response, a closed connection"
    server.wait_for_log(f"127.0.0.1:")
    server.wait_for_log(reason)
    assert "Traceback" not in server.log


def test_proxy_header_only_from_allowed_peers(serve):
    server = serve("echo", "--proxy-protocol", "--proxy-allow-from", "10.0.0.0/8")
    with server.connect() as sock:
        assert env_over(sock)["REMOTE_ADDR"] == "127.0.0.1"  # served as it is
    with server.connect() as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.9 198.51.100.1 51000 8080\r\n" + GET_ENV)
        assert Reader(sock).read_response().status == 400


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_behind_real_haproxy(serve, tmp_path, send_proxy):
    """HAProxy in front, sending PROXY v1 or v2 to ferrule; the client
    connects to HAProxy from 127.0.0.2."""
    server = serve("echo", "--proxy-protocol")
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text((FRONTENDS / "haproxy.cfg").read_text().format(
        port=port, upstream=f"127.0.0.1:{server.port}", send_proxy=send_proxy))
    proc = subprocess.Popen(["haproxy", "-f", str(conf), "-db"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, lambda: "")
        transport = httpx.HTTPTransport(local_address="127.0.0.2")
        with httpx.Client(transport=transport) as client:
            env = client.get(f"http://127.0.0.1:{port}/env").json()
        assert env["REMOTE_ADDR"] == "127.0.0.2"
        assert env["SERVER_PORT"] == str(port)  # from the Host HAProxy passes on
    finally:
        proc.terminate()
        proc.wait(10)


PRODUCTION_CONF = '''
import multiprocessing
import os

workers = 2
threads = 2
forwarded_allow_ips = "127.0.0.1"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %({x-forwarded-for}i)s'
raw_env = ["DJANGO_SETTINGS_MODULE=shop.settings"]
keepalive = 2
timeout = 20
max_requests = 1000
max_requests_jitter = 50


def post_fork(server, worker):
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(f"{worker.pid} {os.environ['DJANGO_SETTINGS_MODULE']}\\n")
'''


def test_a_production_gunicorn_conf_behind_nginx(tmp_path):
    """A gunicorn.conf.py as projects ship it, run unchanged behind real
    nginx: workers, raw_env, hooks, secure_scheme_headers and
    access_log_format, with the scheme taken from nginx and not from a
    client that sends the header to ferrule directly."""
    conf_dir = tmp_path / "conf"
    conf_dir.mkdir()
    (conf_dir / "gunicorn.conf.py").write_text(PRODUCTION_CONF)
    hooks_log = tmp_path / "hooks.log"
    args = ("-c", str(conf_dir / "gunicorn.conf.py"))
    with nginx_in_front(tmp_path, "echo", *args, env={"HOOKS_LOG": str(hooks_log)}) as (url, prefix, server):
        pids = sorted(int(line.split()[0]) for line in wait_for_lines(hooks_log, 2))
        assert all(line.endswith("shop.settings") for line in hooks_log.read_text().splitlines())
        env = httpx.get(url + "/tcp/env", headers={"Host": "shop.example"}).json()
        assert env["wsgi.url_scheme"] == "https" and env["SERVER_PORT"] == "443"
        assert env["_flags"]["wsgi.multithread"] is True and env["_flags"]["wsgi.multiprocess"] is True
        assert httpx.get(url + "/env").json()["wsgi.url_scheme"] == "https"  # over the unix socket
        # Straight to ferrule over TCP, a header secure_scheme_headers does
        # not name changes nothing, though the peer is trusted.
        direct = server.urls[1]
        assert httpx.get(direct + "/env", headers={"X-Forwarded-Ssl": "on"}).json()["wsgi.url_scheme"] == "http"
        # access_log_format, on stdout: nginx over TCP (HTTP/1.0, no
        # X-Forwarded-For), over the unix socket (no peer address; nginx's
        # X-Forwarded-For), and the direct request.
        server.wait_for_stdout('127.0.0.1 "GET /env HTTP/1.0" 200 -\n')
        server.wait_for_stdout('- "GET /env HTTP/1.1" 200 127.0.0.1\n')
        server.wait_for_stdout('127.0.0.1 "GET /env HTTP/1.1" 200 -\n')
        assert len(pids) == 2 and all(p in children(server.proc.pid) for p in pids)


def wait_for_lines(path, count):
    from conftest import wait_until

    wait_until(lambda: path.exists() and len(path.read_text().splitlines()) >= count, what=f"{count} lines")
    return path.read_text().splitlines()
