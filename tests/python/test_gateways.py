"""ferrule behind nginx over uwsgi and SCGI: the same application answers
the same through each front end as over HTTP, and the gateway listeners
refuse bad input and untrusted peers. nginx is a real process with its own
configuration file (tests/python/frontends/nginx.conf)."""

import hashlib
import json
import os
from pathlib import Path

import httpx
import pytest

from conftest import Server
from gateways import (
    FCGI_ABORT_REQUEST, FCGI_BEGIN_REQUEST, FCGI_END_REQUEST, FCGI_GET_VALUES, FCGI_GET_VALUES_RESULT, FCGI_PARAMS,
    FCGI_STDIN, FCGI_STDOUT, FCGI_UNKNOWN_TYPE, FcgiReader, Nginx, fcgi_pairs, fcgi_record, fcgi_records, fcgi_request,
    scgi_netstring, scgi_packet, send_raw, uwsgi_packet,
)

ROUTES = {"uwsgi": "", "scgi": "/scgi", "fastcgi": "/fcgi", "fastcgi-keep": "/fcgi-keep", "http": "/http"}
GATEWAYS = ["uwsgi", "scgi", "fastcgi", "fastcgi-keep"]
SOCKETS = ["uwsgi", "scgi", "fastcgi", "http"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw")
    socks = {name: str(tmp / f"{name}.sock") for name in SOCKETS}
    server = Server(
        "gateway_app", "--threads", "2",
        bind=[f"uwsgi://unix:{socks['uwsgi']}", f"scgi://unix:{socks['scgi']}",
              f"fastcgi://unix:{socks['fastcgi']}", f"unix:{socks['http']}"],
        listeners=4,
    )
    nginx = Nginx(tmp / "nginx", **socks)
    yield server, nginx, socks
    nginx.stop()
    server.kill()


def get_env(nginx, route, path, **kw):
    resp = httpx.get(nginx.url + ROUTES[route] + path, timeout=30, **kw)
    assert resp.status_code == 200, (route, resp.status_code, resp.text)
    return resp.json()


@pytest.mark.parametrize("route", GATEWAYS)
def test_same_environ_as_over_http(stack, route):
    server, nginx, _ = stack
    path = "/caf%C3%A9/a%20b?x=1&y=%C3%A9"
    via_gateway = get_env(nginx, route, path)
    via_http = get_env(nginx, "http", path)
    prefix = ROUTES[route]
    assert via_gateway["PATH_INFO"] == prefix + "/café/a b".encode().decode("latin-1")
    assert via_http["PATH_INFO"] == "/http/café/a b".encode().decode("latin-1")
    for key in ("QUERY_STRING", "REQUEST_METHOD", "SCRIPT_NAME", "wsgi.url_scheme"):
        assert via_gateway[key] == via_http[key], key
    assert via_gateway["REQUEST_URI"] == prefix + path
    assert via_gateway["SCRIPT_NAME"] == ""
    assert via_gateway["SERVER_PROTOCOL"] == "HTTP/1.1"
    # REMOTE_ADDR is the client's, as nginx saw it; over the unix socket
    # ferrule itself sees no address.
    assert via_gateway["REMOTE_ADDR"] == "127.0.0.1"
    assert via_http["REMOTE_ADDR"] == ""
    assert "HTTP_CONTENT_LENGTH" not in via_gateway


def test_readme_recipes_are_the_tested_configuration():
    """The README's nginx blocks for uwsgi, FastCGI and SCGI are copied from
    the configuration these tests run, with real socket paths."""
    from gateways import FRONTENDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Over uwsgi, FastCGI or SCGI", 1)[1]
    block = section.split("```nginx\n", 1)[1].split("```", 1)[0]
    conf = (FRONTENDS / "nginx.conf").read_text().replace("{{", "{").replace("}}", "}")
    for field, value in (("{upstream_uwsgi}", "/run/app.sock"), ("{upstream_scgi}", "/run/app-scgi.sock"),
                         ("{upstream_fastcgi}", "/run/app-fcgi.sock"), ("{port}", "8080")):
        conf = conf.replace(field, value)
    assert block.strip() in conf


def test_mounted_under_a_prefix(stack):
    _, nginx, _ = stack
    env = httpx.get(nginx.url + "/mounted/p/q?z=1").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["QUERY_STRING"]) == ("/mounted", "/p/q", "z=1")
    env = httpx.get(nginx.url + "/mounted").json()
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/mounted", "")


@pytest.mark.parametrize("route", GATEWAYS)
def test_large_and_chunked_uploads(stack, route):
    _, nginx, _ = stack
    data = os.urandom(5 * 1024 * 1024)
    env = httpx.post(nginx.url + ROUTES[route] + "/up", content=data, timeout=60).json()
    assert (env["_body_size"], env["_body_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert env["CONTENT_LENGTH"] == str(len(data))

    def chunks():
        for i in range(0, len(data), 100_000):
            yield data[i:i + 100_000]

    # httpx sends a generator chunked; nginx de-chunks it for the gateway.
    env = httpx.post(nginx.url + ROUTES[route] + "/up", content=chunks(), timeout=60).json()
    assert (env["_body_size"], env["_body_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())


@pytest.mark.parametrize("route", GATEWAYS)
def test_responses_through_the_gateway(stack, route):
    server, nginx, _ = stack
    base = nginx.url + ROUTES[route]
    resp = httpx.get(base + "/stream")
    assert resp.text == "".join(f"part {i}\n" for i in range(50))
    resp = httpx.head(base + "/x")
    assert resp.status_code == 200 and resp.content == b""
    resp = httpx.get(base + "/missing")
    assert (resp.status_code, resp.text) == (404, "nothing here\n")
    resp = httpx.get(base + "/cookies")
    assert resp.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    resp = httpx.get(base + "/fail")
    assert resp.status_code == 500
    server.wait_for_log("RuntimeError: gateway app failure")
    assert httpx.get(base + "/after").status_code == 200, "still serving after the failure"


def test_https_and_remote_address_come_from_the_gateway(stack):
    server, _, socks = stack
    variables = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTPS": "on", "REMOTE_ADDR": "192.0.2.7",
                 "REMOTE_PORT": "4242", "SERVER_NAME": "example.org", "SERVER_PORT": "443",
                 "HTTP_HOST": "example.org"}
    for packet, sock in ((uwsgi_packet(variables), socks["uwsgi"]), (scgi_packet(variables), socks["scgi"])):
        raw = send_raw(sock, packet)
        head, _, body = raw.partition(b"\r\n\r\n")
        env = json.loads(body)
        assert env["wsgi.url_scheme"] == "https"
        assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("192.0.2.7", "4242")
        assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "443")
    raw = send_raw(socks["uwsgi"], uwsgi_packet(variables))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nServer:" not in raw.partition(b"\r\n\r\n")[0], "the gateway adds its own"
    raw = send_raw(socks["scgi"], scgi_packet(variables))
    assert raw.startswith(b"Status: 200 OK\r\n")


def test_request_variables_never_load_code(stack, tmp_path):
    """uWSGI loads and runs UWSGI_FILE and friends from the request;
    ferrule ignores them (and leaves them out of the environ)."""
    server, _, socks = stack
    marker = tmp_path / "loaded"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').write('x')\napplication = None\n")
    variables = {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "UWSGI_FILE": str(evil),
                 "UWSGI_SCRIPT": "evil", "UWSGI_CHDIR": str(tmp_path), "UWSGI_PYHOME": str(tmp_path)}
    raw = send_raw(socks["uwsgi"], uwsgi_packet(variables))
    env = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert not any(k.startswith("UWSGI_") for k in env)
    assert not marker.exists()


def test_flask_behind_nginx_over_uwsgi(tmp_path):
    sock = str(tmp_path / "flask.sock")
    server = Server("flask_app:app", "--threads", "2", bind=[f"uwsgi://unix:{sock}"])
    nginx = Nginx(tmp_path / "nginx", uwsgi=sock, scgi=sock, http=sock)
    try:
        base = nginx.url
        assert httpx.get(base + "/json").json() == {"message": "hello", "items": [1, 2, 3]}
        resp = httpx.post(base + "/form", data={"name": "Zoë", "tag": ["a", "b"]})
        assert resp.json() == {"name": "Zoë", "tags": ["a", "b"]}
        assert httpx.get(base + "/stream").text == "".join(f"part {i}\n" for i in range(5))
        resp = httpx.get(base + "/old")
        assert resp.status_code == 302 and resp.headers["location"].endswith("/json")
        assert httpx.get(base + "/teapot").status_code == 418
        assert httpx.get(base + "/boom").status_code == 500
        server.wait_for_log("RuntimeError: flask view failed")
    finally:
        nginx.stop()
        server.kill()


def test_django_behind_nginx_over_uwsgi(tmp_path):
    blob = os.urandom(200_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    env = {"DJSITE_DB": str(tmp_path / "db.sqlite3"), "DJSITE_FILE": str(tmp_path / "blob.bin")}
    sock = str(tmp_path / "dj.sock")
    server = Server("djsite.wsgi", "--threads", "2", bind=[f"uwsgi://unix:{sock}"], env=env)
    nginx = Nginx(tmp_path / "nginx", uwsgi=sock, scgi=sock, http=sock)
    try:
        base = nginx.url
        assert httpx.get(base + "/json/?q=1").json() == {"path": "/json/", "method": "GET", "q": "1"}
        assert httpx.post(base + "/body/", content=b"x" * 70_000).json() == {"len": 70_000}
        resp = httpx.get(base + "/file/")
        assert resp.status_code == 200 and resp.content == blob
    finally:
        nginx.stop()
        server.kill()


def test_paste_middleware_behind_nginx_over_uwsgi(tmp_path):
    sock = str(tmp_path / "paste.sock")
    server = Server("paste_stack", bind=[f"uwsgi://unix:{sock}"])
    nginx = Nginx(tmp_path / "nginx", uwsgi=sock, scgi=sock, http=sock)
    try:
        with httpx.Client(base_url=nginx.url) as client:
            first = client.get("/", headers={"Accept-Encoding": "gzip"})
            assert first.headers.get("content-encoding") == "gzip"
            assert first.text.startswith("count=1 ")
            assert client.get("/").text.startswith("count=2 "), "the session cookie round-trips"
            failed = client.get("/fail")
            assert failed.status_code == 500 and "counter failure for EvalException" in failed.text
    finally:
        nginx.stop()
        server.kill()


# --- bad input: a clear log line, a refusal or a closed connection, and the
# worker keeps serving everyone else ------------------------------------------

GET = {"REQUEST_METHOD": "GET", "PATH_INFO": "/ok"}


def still_serving(sock_path):
    raw = send_raw(sock_path, uwsgi_packet(GET))
    assert raw.startswith(b"HTTP/1.1 200 OK"), raw[:200]


UWSGI_BAD = {
    # A value's length runs past the variables block.
    "var overrun": (b"\x00\x08\x00\x00\x01\x00A\x09\x00BCD", b"HTTP/1.1 400 ", "uwsgi variable overruns"),
    # modifier1 5 is PSGI, not WSGI.
    "modifier1": (b"\x05\x00\x00\x00", b"HTTP/1.1 400 ", "uwsgi modifier1 is not 0 or 30"),
    "no method": (uwsgi_packet({"PATH_INFO": "/"}), b"HTTP/1.1 400 ", "no REQUEST_METHOD"),
    "bad length": (uwsgi_packet({**GET, "CONTENT_LENGTH": "12x"}), b"HTTP/1.1 400 ", "invalid CONTENT_LENGTH"),
    # The header is cut short, or promises more variables than arrive.
    "cut header": (b"\x00\x10", b"", None),
    "cut vars": (b"\x00\x64\x00\x00" + b"\x0e\x00REQUEST_METHOD", b"", None),
}


@pytest.mark.parametrize("case", sorted(UWSGI_BAD))
def test_bad_uwsgi_input(stack, case):
    server, _, socks = stack
    packet, answer, logged = UWSGI_BAD[case]
    raw = send_raw(socks["uwsgi"], packet)
    if answer:
        assert raw.startswith(answer), raw[:200]
    else:
        assert raw == b"", "closed without an answer"
    if logged:
        server.wait_for_log(logged)
    still_serving(socks["uwsgi"])


CL0, SCGI1, METHOD = ("CONTENT_LENGTH", "0"), ("SCGI", "1"), ("REQUEST_METHOD", "GET")
SCGI_BAD = {
    "not a number": (b"x:", "SCGI netstring length is not a number"),
    "no comma": (scgi_packet(GET)[:-1] + b";", "SCGI netstring does not end with ','"),
    "no SCGI=1": (scgi_netstring([CL0, METHOD]), "lack SCGI=1"),
    "length not first": (scgi_netstring([SCGI1, CL0, METHOD]), "do not begin with CONTENT_LENGTH"),
    "twice": (scgi_netstring([CL0, SCGI1, METHOD, METHOD]), "SCGI variable sent twice"),
    "cut short": (b"40:CONTENT_LENGTH\x00", None),
}


@pytest.mark.parametrize("case", sorted(SCGI_BAD))
def test_bad_scgi_input(stack, case):
    server, _, socks = stack
    packet, logged = SCGI_BAD[case]
    raw = send_raw(socks["scgi"], packet)
    if logged:
        assert raw.startswith(b"Status: 400 Bad Request\r\n"), raw[:200]
    else:
        assert raw == b"", "closed without an answer"
    if logged:
        server.wait_for_log(logged)
    still_serving(socks["uwsgi"])


def test_body_shorter_or_longer_than_content_length(stack):
    server, _, socks = stack
    import socket as socketlib

    with socketlib.socket(socketlib.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(socks["uwsgi"])
        sock.sendall(uwsgi_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/up", "CONTENT_LENGTH": "100000"},
                                  b"x" * 1000))
        sock.shutdown(socketlib.SHUT_WR)
        raw = sock.recv(65536)
    assert raw.startswith(b"HTTP/1.1 400 Bad Request"), raw[:200]
    server.wait_for_log("client closed the connection before the end of the request body")
    raw = send_raw(socks["uwsgi"], uwsgi_packet({"REQUEST_METHOD": "POST", "PATH_INFO": "/up",
                                                 "CONTENT_LENGTH": "3"}, b"abcdef"))
    env = json.loads(raw.partition(b"\r\n\r\n")[2])
    assert env["_body_size"] == 3 and env["_body_sha256"] == hashlib.sha256(b"abc").hexdigest()


def test_buffer_size_at_the_limit_and_one_past(serve, tmp_path):
    packet = uwsgi_packet({**GET, "HTTP_COOKIE": "c" * 5000})
    size = int.from_bytes(packet[1:3], "little")
    for limit, status in ((size, b"200"), (size - 1, b"431")):
        sock = str(tmp_path / f"{limit}.sock")
        serve("gateway_app", "--buffer-size", str(limit), bind=[f"uwsgi://unix:{sock}"])
        assert send_raw(sock, packet).startswith(b"HTTP/1.1 " + status)


def test_scgi_buffer_size_at_the_limit_and_one_past(serve, tmp_path):
    packet = scgi_packet({**GET, "HTTP_COOKIE": "c" * 5000})
    size = int(packet.split(b":", 1)[0])
    for limit, status in ((size, b"200"), (size - 1, b"431")):
        sock = str(tmp_path / f"{limit}.sock")
        serve("gateway_app", "--buffer-size", str(limit), bind=[f"scgi://unix:{sock}"])
        assert send_raw(sock, packet).startswith(b"Status: " + status)


# --- trust --------------------------------------------------------------------

def test_gateway_listeners_accept_only_allowed_peers(serve):
    refused = serve("gateway_app", "--gateway-allow-from", "127.0.0.2,10.0.0.0/8", bind=["uwsgi://127.0.0.1:0"])
    port = int(refused.url.rsplit(":", 1)[1])
    for _ in range(3):
        assert send_raw(("127.0.0.1", port), uwsgi_packet(GET)) == b""
    refused.wait_for_log("refused a connection from 127.0.0.1, which is not in gateway_allow_from")
    assert refused.log.count("refused a connection from 127.0.0.1") == 1, "logged once per peer"

    # gunicorn's name for the setting; loopback is allowed by default.
    for args in (["--uwsgi-allow-from", "127.0.0.1"], []):
        allowed = serve("gateway_app", *args, bind=["uwsgi://127.0.0.1:0"])
        port = int(allowed.url.rsplit(":", 1)[1])
        assert send_raw(("127.0.0.1", port), uwsgi_packet(GET)).startswith(b"HTTP/1.1 200 OK")


def test_http_listeners_do_not_check_peers(serve):
    server = serve("gateway_app", "--gateway-allow-from", "10.0.0.1", bind=["127.0.0.1:0"])
    assert httpx.get(server.url + "/x").status_code == 200


def test_protocol_flag_names_the_protocol_of_plain_binds(serve, tmp_path):
    sock = str(tmp_path / "p.sock")
    server = serve("gateway_app", "--protocol", "uwsgi", bind=[f"unix:{sock}"])
    assert server.url == f"uwsgi://unix:{sock}"
    assert send_raw(sock, uwsgi_packet(GET)).startswith(b"HTTP/1.1 200 OK")


def test_bad_gateway_settings_name_the_accepted_values():
    from conftest import run_ferrule

    result = run_ferrule("gateway_app", "--gateway-allow-from", "localhost")
    assert result.returncode == 2 and "--gateway-allow-from" in result.stderr and "IP address" in result.stderr
    result = run_ferrule("gateway_app", "--protocol", "gopher")
    assert result.returncode == 2 and "http" in result.stderr and "uwsgi" in result.stderr
    result = run_ferrule("gateway_app", "-b", "gopher://127.0.0.1:1")
    assert result.returncode == 2 and "uwsgi://" in result.stderr


# --- FastCGI at the record level ----------------------------------------------

def fcgi_connect(path):
    import socket as socketlib

    sock = socketlib.socket(socketlib.AF_UNIX)
    sock.settimeout(10)
    sock.connect(path)
    return sock


END_COMPLETE = b"\0\0\0\0\0\0\0\0"


def test_fastcgi_kept_connection_carries_many_requests(stack):
    _, _, socks = stack
    with fcgi_connect(socks["fastcgi"]) as sock:
        reader = FcgiReader(sock)
        for i in range(1, 21):
            body = os.urandom(i * 1000)
            sock.sendall(fcgi_request(i, {"REQUEST_METHOD": "POST", "PATH_INFO": f"/n{i}",
                                          "CONTENT_LENGTH": str(len(body))}, body, keep_conn=True))
            stdout, end = reader.response(i)
            assert end == END_COMPLETE
            head, _, payload = stdout.partition(b"\r\n\r\n")
            assert head.startswith(b"Status: 200 OK")
            env = json.loads(payload)
            assert env["PATH_INFO"] == f"/n{i}" and env["_body_sha256"] == hashlib.sha256(body).hexdigest()


def test_fastcgi_without_keep_conn_closes_after_the_request(stack):
    _, _, socks = stack
    raw = send_raw(socks["fastcgi"], fcgi_request(1, {"REQUEST_METHOD": "GET", "PATH_INFO": "/x", "HTTPS": "on"}))
    records = fcgi_records(raw)
    assert records[-1] == (FCGI_END_REQUEST, 1, END_COMPLETE)
    stdout = b"".join(c for k, r, c in records if k == FCGI_STDOUT)
    assert json.loads(stdout.partition(b"\r\n\r\n")[2])["wsgi.url_scheme"] == "https"
    assert all(len(c) <= 65535 for _, _, c in records)


def test_fastcgi_large_response_in_records(stack):
    _, _, socks = stack
    variables = {"REQUEST_METHOD": "POST", "PATH_INFO": "/big", "HTTP_X_PAD": "p" * 100}
    body = os.urandom(300_000)
    raw = send_raw(socks["fastcgi"], fcgi_request(3, {**variables, "CONTENT_LENGTH": str(len(body))}, body))
    records = fcgi_records(raw)
    stdout = b"".join(c for k, r, c in records if k == FCGI_STDOUT)
    env = json.loads(stdout.partition(b"\r\n\r\n")[2])
    assert env["_body_size"] == len(body)
    assert records[-2] == (FCGI_STDOUT, 3, b""), "the STDOUT stream is ended"


def test_fastcgi_management_records_and_refusals(stack):
    _, _, socks = stack
    with fcgi_connect(socks["fastcgi"]) as sock:
        reader = FcgiReader(sock)
        sock.sendall(fcgi_record(FCGI_GET_VALUES, 0, fcgi_pairs({"FCGI_MPXS_CONNS": "", "FCGI_MAX_CONNS": ""})))
        kind, rid, content = reader.record()
        assert (kind, rid) == (FCGI_GET_VALUES_RESULT, 0)
        assert content == fcgi_pairs({"FCGI_MPXS_CONNS": "0", "FCGI_MAX_CONNS": "1000"})
        sock.sendall(fcgi_record(77, 0))
        assert reader.record() == (FCGI_UNKNOWN_TYPE, 0, bytes([77]) + b"\0" * 7)
        # A filter (role 3) is not served.
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 9, b"\0\x03\x01" + b"\0" * 5))
        assert reader.record() == (FCGI_END_REQUEST, 9, b"\0\0\0\0\x03\0\0\0")
        # Request 1 begins; request 2 begins while 1 is running: refused.
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 1, b"\0\x01\x01" + b"\0" * 5))
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 2, b"\0\x01\x01" + b"\0" * 5))
        assert reader.record() == (FCGI_END_REQUEST, 2, b"\0\0\0\0\x01\0\0\0")
        # Request 1 goes on and is answered.
        sock.sendall(fcgi_record(FCGI_PARAMS, 1, fcgi_pairs({"REQUEST_METHOD": "GET", "PATH_INFO": "/one"}))
                     + fcgi_record(FCGI_PARAMS, 1) + fcgi_record(FCGI_STDIN, 1))
        stdout, end = reader.response(1)
        assert end == END_COMPLETE and json.loads(stdout.partition(b"\r\n\r\n")[2])["PATH_INFO"] == "/one"


def test_fastcgi_request_begun_during_a_body_is_refused(stack):
    """A gateway that begins request 4 while request 3's body is on its way
    gets END_REQUEST with CANT_MPX_CONN for 4, and 3 is answered."""
    _, _, socks = stack
    with fcgi_connect(socks["fastcgi"]) as sock:
        reader = FcgiReader(sock)
        params = {"REQUEST_METHOD": "POST", "PATH_INFO": "/body", "CONTENT_LENGTH": "6"}
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 3, b"\0\x01\x01" + b"\0" * 5)
                     + fcgi_record(FCGI_PARAMS, 3, fcgi_pairs(params)) + fcgi_record(FCGI_PARAMS, 3)
                     + fcgi_record(FCGI_STDIN, 3, b"abc"))
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 4, b"\0\x01\x01" + b"\0" * 5))
        assert reader.record() == (FCGI_END_REQUEST, 4, b"\0\0\0\0\x01\0\0\0")
        sock.sendall(fcgi_record(FCGI_STDIN, 3, b"def") + fcgi_record(FCGI_STDIN, 3))
        stdout, end = reader.response(3)
        body = json.loads(stdout.partition(b"\r\n\r\n")[2])
        assert end == END_COMPLETE and body["_body_size"] == 6
        assert body["_body_sha256"] == hashlib.sha256(b"abcdef").hexdigest()


def test_fastcgi_abort_request(stack):
    server, _, socks = stack
    with fcgi_connect(socks["fastcgi"]) as sock:
        reader = FcgiReader(sock)
        # Aborted before its params ended: over at once.
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 4, b"\0\x01\x01" + b"\0" * 5)
                     + fcgi_record(FCGI_ABORT_REQUEST, 4))
        assert reader.record() == (FCGI_END_REQUEST, 4, END_COMPLETE)
        # Aborted while the application reads its body: the application
        # sees a client error and the request ends with END_REQUEST.
        sock.sendall(fcgi_record(FCGI_BEGIN_REQUEST, 5, b"\0\x01\x01" + b"\0" * 5)
                     + fcgi_record(FCGI_PARAMS, 5, fcgi_pairs({"REQUEST_METHOD": "POST", "PATH_INFO": "/up",
                                                             "CONTENT_LENGTH": "1000"}))
                     + fcgi_record(FCGI_PARAMS, 5) + fcgi_record(FCGI_STDIN, 5, b"x" * 10)
                     + fcgi_record(FCGI_ABORT_REQUEST, 5))
        stdout, end = reader.response(5)
        assert stdout.startswith(b"Status: 400 Bad Request") and end == END_COMPLETE
    server.wait_for_log("the gateway aborted the request")
    still_serving(socks["uwsgi"])


@pytest.mark.parametrize("case", ["version", "stdin before params", "pair overrun"])
def test_bad_fastcgi_records(stack, case):
    server, _, socks = stack
    begin = fcgi_record(FCGI_BEGIN_REQUEST, 1, b"\0\x01\0" + b"\0" * 5)
    packet = {
        "version": b"\x02" + fcgi_record(FCGI_BEGIN_REQUEST, 1, b"\0\x01\0" + b"\0" * 5)[1:],
        "stdin before params": begin + fcgi_record(FCGI_STDIN, 1, b"x"),
        "pair overrun": begin + fcgi_record(FCGI_PARAMS, 1, b"\x05\xc8A") + fcgi_record(FCGI_PARAMS, 1),
    }[case]
    raw = send_raw(socks["fastcgi"], packet)
    if case == "version":
        assert raw == b""
        server.wait_for_log("FastCGI record version is not 1")
    else:
        records = fcgi_records(raw)
        stdout = b"".join(c for k, r, c in records if k == FCGI_STDOUT)
        assert stdout.startswith(b"Status: 400 Bad Request") and records[-1][0] == FCGI_END_REQUEST
    still_serving(socks["uwsgi"])


def test_fastcgi_params_at_the_limit_and_one_past(serve, tmp_path):
    variables = {**GET, "HTTP_COOKIE": "c" * 5000}
    size = len(fcgi_pairs(variables))
    for limit, status in ((size, b"200"), (size - 1, b"431")):
        sock = str(tmp_path / f"{limit}.sock")
        serve("gateway_app", "--buffer-size", str(limit), bind=[f"fastcgi://unix:{sock}"])
        stdout = b"".join(c for k, r, c in fcgi_records(send_raw(sock, fcgi_request(1, variables)))
                          if k == FCGI_STDOUT)
        assert stdout.startswith(b"Status: " + status), stdout[:100]


def test_libfcgi_reference_client(stack):
    """libfcgi's cgi-fcgi, the FastCGI reference implementation's client,
    forwards a CGI request to ferrule's FastCGI listener."""
    import subprocess

    _, _, socks = stack
    body = b"reference body"
    env = {"PATH": os.environ["PATH"], "REQUEST_METHOD": "POST", "PATH_INFO": "/ref", "QUERY_STRING": "q=1",
           "CONTENT_LENGTH": str(len(body)), "SERVER_PROTOCOL": "HTTP/1.1"}
    result = subprocess.run(["cgi-fcgi", "-bind", "-connect", socks["fastcgi"]], input=body, env=env,
                            capture_output=True, timeout=30)
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 200 OK"), result
    got = json.loads(payload)
    assert (got["PATH_INFO"], got["QUERY_STRING"], got["_body_size"]) == ("/ref", "q=1", len(body))
