"""Static files (--static PREFIX=DIR), served by ferrule without the
application: validators and conditional requests, ranges, HEAD,
precompressed siblings, traversal and symlinks, the fall-through to the
application, and the gateway protocols."""

import email.utils
import hashlib
import os
import socket

import httpx
import pytest

from conftest import Reader, exchange, run_ferrule
from gateways import FcgiReader, fcgi_request, send_raw, uwsgi_packet


@pytest.fixture
def site(tmp_path):
    root = tmp_path / "static"
    (root / "css").mkdir(parents=True)
    (root / "css" / "app.css").write_bytes(b"body { color: red }\n" * 10)
    (root / "css" / "app.css.gz").write_bytes(b"GZIP-BYTES")
    (root / "css" / "app.css.br").write_bytes(b"BROTLI-BYTES")
    (root / "data.bin").write_bytes(os.urandom(4096))
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "page.html").write_text("<p>hi</p>")
    (root / "stray.js.gz").write_bytes(b"no identity file beside me")
    (tmp_path / "secret.txt").write_text("outside the directory")
    (root / "out.txt").symlink_to(tmp_path / "secret.txt")
    (root / "up.txt").symlink_to("../secret.txt")
    (root / "in.css").symlink_to("css/app.css")
    os.utime(root / "data.bin", (1_700_000_000, 1_700_000_000))
    return root


@pytest.fixture
def server(serve, site):
    return serve("behaviours", "--static", f"/static={site}", "--static-cache-control",
                 "public, max-age=600", "--access-logfile", "-")


def get(server, path, **headers):
    return exchange(server, f"GET {path} HTTP/1.1\r\nHost: x\r\n".encode()
                    + b"".join(f"{k.replace('_', '-')}: {v}\r\n".encode() for k, v in headers.items())
                    + b"\r\n")


def test_a_file_with_its_validators(server, site):
    resp = httpx.get(server.url + "/static/data.bin")
    assert resp.status_code == 200
    assert resp.content == (site / "data.bin").read_bytes()
    assert resp.headers["content-type"] == "application/octet-stream"
    assert resp.headers["content-length"] == "4096"
    assert resp.headers["etag"] == '"6553f100-1000"'
    assert resp.headers["last-modified"] == email.utils.formatdate(1_700_000_000, usegmt=True)
    assert resp.headers["accept-ranges"] == "bytes"
    assert resp.headers["cache-control"] == "public, max-age=600"
    assert "vary" not in resp.headers
    assert httpx.get(server.url + "/static/page.html").headers["content-type"] == "text/html; charset=utf-8"
    big = httpx.get(server.url + "/static/big.bin")
    assert hashlib.sha256(big.content).digest() == hashlib.sha256((site / "big.bin").read_bytes()).digest()
    server.wait_for_stdout('"GET /static/data.bin HTTP/1.1" 200 4096')


def test_conditional_requests(server):
    etag = '"6553f100-1000"'
    date = email.utils.formatdate(1_700_000_000, usegmt=True)
    earlier = email.utils.formatdate(1_699_999_999, usegmt=True)
    resp = get(server, "/static/data.bin", If_None_Match=etag)
    assert resp.status == 304 and resp.body == b""
    assert resp.header("ETag") == etag and resp.header("Content-Length") is None
    assert get(server, "/static/data.bin", If_None_Match=f'"x", W/{etag}').status == 304
    assert get(server, "/static/data.bin", If_None_Match='"other"').status == 200
    assert get(server, "/static/data.bin", If_Modified_Since=date).status == 304
    assert get(server, "/static/data.bin", If_Modified_Since=earlier).status == 200
    # If-None-Match is evaluated instead of If-Modified-Since (RFC 9110 §13.2.2).
    assert get(server, "/static/data.bin", If_None_Match='"other"', If_Modified_Since=date).status == 200
    assert get(server, "/static/data.bin", If_Match='"other"').status == 412
    assert get(server, "/static/data.bin", If_Unmodified_Since=earlier).status == 412


def test_ranges(server, site):
    data = (site / "data.bin").read_bytes()
    resp = get(server, "/static/data.bin", Range="bytes=100-199")
    assert resp.status == 206 and resp.body == data[100:200]
    assert resp.header("Content-Range") == "bytes 100-199/4096"
    assert get(server, "/static/data.bin", Range="bytes=-10").body == data[-10:]
    assert get(server, "/static/data.bin", Range="bytes=4000-").body == data[4000:]
    resp = get(server, "/static/data.bin", Range="bytes=5000-")
    assert resp.status == 416 and resp.header("Content-Range") == "bytes */4096"
    # Several ranges get the whole file.
    resp = get(server, "/static/data.bin", Range="bytes=0-1,5-6")
    assert resp.status == 200 and resp.body == data
    assert get(server, "/static/data.bin", Range="bytes=0-9", If_Range='"6553f100-1000"').status == 206
    assert get(server, "/static/data.bin", Range="bytes=0-9", If_Range='"stale"').status == 200
    big = (site / "big.bin").read_bytes()
    resp = httpx.get(server.url + "/static/big.bin", headers={"Range": "bytes=1000000-2999999"})
    assert resp.status_code == 206 and resp.content == big[1000000:3000000]


def test_head_sends_the_fields_without_the_body(server):
    with server.connect() as sock:
        sock.sendall(b"HEAD /static/data.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /static/page.html HTTP/1.1\r\nHost: x\r\n\r\n")
        reader = Reader(sock)
        head = reader.read_response(head_request=True)
        assert head.status == 200 and head.header("Content-Length") == "4096"
        # The next response follows at once: no body bytes were sent.
        page = reader.read_response()
        assert page.status == 200 and page.body == b"<p>hi</p>"
    # Range is for GET only (RFC 9110 §14.2).
    with server.connect() as sock:
        sock.sendall(b"HEAD /static/data.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n")
        head = Reader(sock).read_response(head_request=True)
        assert head.status == 200 and head.header("Content-Length") == "4096"


def test_precompressed_siblings_by_accept_encoding(server):
    resp = get(server, "/static/css/app.css", Accept_Encoding="gzip, deflate, br")
    assert resp.body == b"BROTLI-BYTES" and resp.header("Content-Encoding") == "br"
    assert resp.header("Vary") == "Accept-Encoding"
    assert resp.header("Content-Type") == "text/css; charset=utf-8"
    resp = get(server, "/static/css/app.css", Accept_Encoding="gzip")
    assert resp.body == b"GZIP-BYTES" and resp.header("Content-Encoding") == "gzip"
    assert resp.header("ETag").endswith('-gzip"')
    resp = get(server, "/static/css/app.css", Accept_Encoding="br;q=0, gzip;q=0")
    assert resp.body.startswith(b"body {") and resp.header("Content-Encoding") is None
    assert resp.header("Vary") == "Accept-Encoding"
    resp = get(server, "/static/css/app.css")
    assert resp.body.startswith(b"body {") and resp.header("Content-Encoding") is None
    # A sibling without its file is not the file.
    assert get(server, "/static/stray.js", Accept_Encoding="gzip").body == b"not found"


@pytest.mark.parametrize("target", [
    "/static/../../etc/passwd",
    "/static/%2e%2e/secret.txt",
    "/static/css/%2E%2E/%2e%2e/secret.txt",
    "/static/./data.bin",
    "/static/css%5c..%5c..%5csecret.txt",
    "/static/data.bin%00.css",
])
def test_names_that_could_leave_the_directory_are_refused(server, target):
    resp = get(server, target)
    assert resp.status == 400, resp
    assert b"outside" not in resp.body


def test_empty_segments_are_merged_as_nginx_does(server, site):
    assert get(server, "/static//css//app.css").body == (site / "css" / "app.css").read_bytes()


def test_symlinks_may_not_leave_the_directory(server):
    for target in ["/static/out.txt", "/static/up.txt"]:
        resp = get(server, target)
        assert resp.status == 404 and b"outside" not in resp.body
    server.wait_for_log('static file "out.txt" leads out of')
    assert get(server, "/static/in.css").body.startswith(b"body {")


def test_what_is_not_a_file_goes_to_the_application(server):
    # behaviours answers unknown paths "not found" itself.
    for target in ["/static/missing.css", "/static/css/", "/static/css", "/static", "/staticx/data.bin"]:
        resp = get(server, target)
        assert (resp.status, resp.body) == (404, b"not found"), target
    resp = exchange(server, b"POST /static/data.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
    assert resp.body == b"not found"
    # The application still serves its own paths.
    assert get(server, "/list3").status == 200


def test_keep_alive_across_static_and_application_responses(server, site):
    data = (site / "data.bin").read_bytes()
    with httpx.Client() as client:
        for _ in range(3):
            assert client.get(server.url + "/static/data.bin").content == data
            assert client.get(server.url + "/list3").status_code == 200
            assert client.get(server.url + "/static/data.bin", headers={"Range": "bytes=0-0"}).content == data[:1]


def test_over_uwsgi_and_fastcgi(serve, site):
    data = (site / "data.bin").read_bytes()
    variables = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/static/data.bin?v=1", "PATH_INFO": "/static/data.bin",
                 "QUERY_STRING": "v=1", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
                 "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_RANGE": "bytes=0-99"}
    uwsgi = serve("behaviours", "--static", f"/static={site}", bind=["uwsgi://127.0.0.1:0"])
    reply = send_raw(uwsgi.address, uwsgi_packet(variables))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 206") and b"Content-Range: bytes 0-99/4096" in head
    assert body == data[:100]
    # FastCGI cannot carry sendfile's raw bytes: the file goes in STDOUT records.
    fcgi = serve("behaviours", "--static", f"/static={site}", bind=["fastcgi://127.0.0.1:0"])
    del variables["HTTP_RANGE"]
    with socket.create_connection(fcgi.address, timeout=10) as sock:
        for request_id in (1, 2):
            sock.sendall(fcgi_request(request_id, variables, keep_conn=True))
            stdout, end = FcgiReader(sock).response(request_id)
            head, _, body = stdout.partition(b"\r\n\r\n")
            assert head.startswith(b"Status: 200 OK") and body == data
        # A name with no file goes to the application, STDIN and all.
        variables["PATH_INFO"] = variables["REQUEST_URI"] = "/static/missing.css"
        sock.sendall(fcgi_request(3, variables, keep_conn=True))
        stdout, end = FcgiReader(sock).response(3)
        assert stdout.startswith(b"Status: 404 Not Found") and stdout.endswith(b"not found")


def test_bad_static_settings_are_named(tmp_path):
    for args, says in [
        (["--static", "static=/srv"], "must start with '/'"),
        (["--static", "/static"], "is not PREFIX=DIR"),
        (["--static", "/static="], "names no directory"),
        (["--static", f"/static={tmp_path / 'nope'}"], "is not a directory"),
    ]:
        proc = run_ferrule("behaviours", *args, "--check-config")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "--static" in proc.stderr and says in proc.stderr, (args, proc.stderr)


def test_uwsgi_ini_static_options(tmp_path):
    (tmp_path / "www" / "assets").mkdir(parents=True)
    (tmp_path / "uwsgi.ini").write_text(
        "[uwsgi]\nmodule = behaviours\nstatic-map = /media=%d\nstatic-map2 = /assets=%dwww\ncheck-static = %dwww\n")
    result = run_ferrule("--ini", str(tmp_path / "uwsgi.ini"), "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (f"static = /media={tmp_path}/,/assets={tmp_path}/www/assets,/={tmp_path}/www  "
            f"({tmp_path}/uwsgi.ini)") in result.stdout.splitlines()
