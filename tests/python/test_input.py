"""wsgi.input: every read method behaves as file objects do, over
Content-Length and chunked bodies, buffered or streamed, and
Expect: 100-continue is answered on the first read."""

import hashlib
import io
import json
import os
import socket
import time

import pytest

from conftest import Reader, Server, exchange

BODY = b"line one\nline two\n\nlast line without newline"


MODES = {
    # Bodies received before the application runs: in memory...
    "buffered": [],
    # ...or, past a post-buffering of 0, in a temporary file...
    "spooled": ["--post-buffering", "0"],
    # ...or read by the application from the socket on demand.
    "streamed": ["--post-buffering", "0", "--stream-uploads"],
}


@pytest.fixture(scope="module", params=sorted(MODES))
def app(request):
    server = Server("behaviours", *MODES[request.param])
    server.mode = request.param
    yield server
    server.kill()


def post(server, query, body=BODY, chunked=False):
    if chunked:
        framed = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        raw = (b"POST /input?%s HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" % query.encode()
               + framed + b"0\r\n\r\n")
    else:
        raw = b"POST /input?%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (query.encode(), len(body)) + body
    resp = exchange(server, raw)
    assert resp.status == 200, resp
    return [s.encode("latin-1") for s in json.loads(resp.body)]


def reference(op, **kw):
    """What a real file object returns for the same calls."""
    f = io.BytesIO(BODY)
    if op in ("read", "read_none", "read_minus"):
        return [f.read()]
    if op == "read_n":
        out = []
        while True:
            b = f.read(kw["n"])
            out.append(b)
            if not b:
                return out
    if op == "readline":
        out = []
        while True:
            line = f.readline()
            out.append(line)
            if not line:
                return out
    if op == "readline_n":
        out = []
        while True:
            line = f.readline(kw["n"])
            out.append(line)
            if not line:
                return out
    if op == "readlines":
        out = f.readlines(kw["hint"]) if kw.get("hint") else f.readlines()
        return out + [f.read()]
    if op == "iter":
        return list(f)


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize(
    "op, kw",
    [
        ("read", {}),
        ("read_none", {}),
        ("read_minus", {}),
        ("read_n", {"n": 1}),
        ("read_n", {"n": 5}),
        ("read_n", {"n": 1000}),
        ("readline", {}),
        ("readline_n", {"n": 4}),
        ("readline_n", {"n": 9}),
        ("readlines", {}),
        ("readlines", {"hint": 10}),
        ("iter", {}),
    ],
)
def test_reads_match_file_objects(app, op, kw, chunked):
    query = f"op={op}" + "".join(f"&{k}={v}" for k, v in kw.items())
    assert post(app, query, chunked=chunked) == reference(op, **kw)


def test_empty_body_reads_return_empty_at_once(app):
    resp = exchange(app, b"GET /input?op=read HTTP/1.1\r\nHost: t\r\n\r\n")
    assert json.loads(resp.body) == [""]


def test_expect_100_continue_answered_on_first_read(app):
    with app.connect() as sock:
        sock.sendall(b"POST /input?op=read HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        interim = reader.read_response()
        assert interim.status == 100
        sock.sendall(b"hello")
        final = reader.read_response()
        assert json.loads(final.body) == ["hello"]


def test_expect_100_continue_when_app_does_not_read(app):
    """Streamed, 100 Continue waits for the application's first read, so an
    application that never reads gets no body sent; received first, the
    go-ahead comes before the application runs, and the body with it."""
    with app.connect() as sock:
        sock.sendall(b"POST /list3 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        reader = Reader(sock)
        if app.mode == "streamed":
            resp = reader.read_response()
            assert resp.status == 200 and resp.body == b"one two three"
            assert reader.closed(), "body never sent: the connection cannot be reused"
        else:
            assert reader.read_response().status == 100
            sock.sendall(b"hello")
            resp = reader.read_response()
            assert resp.status == 200 and resp.body == b"one two three"
            sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
            assert reader.read_response().status == 200, "the connection is kept"


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
def test_large_upload_streams_intact(app, chunked):
    data = os.urandom(5 * 1024 * 1024)
    with app.connect(timeout=60) as sock:
        if chunked:
            sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), 100_000):
                piece = data[i:i + 100_000]
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
        else:
            sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(data))
            sock.sendall(data)
        resp = Reader(sock).read_response()
    assert json.loads(resp.body) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_client_vanishing_mid_body_is_an_error_not_a_hang(serve):
    server = serve("behaviours", "--post-buffering", "0", "--socket-timeout", "2")
    with server.connect() as sock:
        sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
    server.wait_for_log("client closed the connection before the end of the request body")


def test_body_timeout_when_client_goes_quiet(serve):
    server = serve("behaviours", "--post-buffering", "0", "--socket-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000)
        server.wait_for_log("no progress within socket_timeout")


def test_quiet_client_of_a_buffered_body_is_dropped_after_socket_timeout(serve):
    """A body small enough to be read before the application runs: a client
    that stops sending it gets 408 after --socket-timeout, and the
    application is never called."""
    server = serve("behaviours", "--socket-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        sock.settimeout(15)
        reader = Reader(sock)
        assert reader.read_response().status == 408
        assert reader.closed()
    server.wait_for_log("refused (408): request body: client made no progress within socket_timeout")


# A client's own mistakes while sending a body are client errors: the
# application sees ferrule.ClientDisconnected (an OSError), the client gets a
# 4xx if nothing was sent yet, and the log has an info line, no traceback.

CUT_SHORT = {
    "length": b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000,
    "chunked": b"POST /upload-size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n" + b"x" * 1000 + b"\r\n",
}


@pytest.mark.parametrize("mode", ["spooled", "streamed"])
@pytest.mark.parametrize("framing", sorted(CUT_SHORT))
def test_body_cut_short_is_a_client_error(serve, framing, mode):
    """Received first, the request is refused before the application runs;
    streamed, the application's read fails. A 400 and an info line either
    way."""
    server = serve("behaviours", *MODES[mode])
    with server.connect() as sock:
        sock.sendall(CUT_SHORT[framing])
        sock.shutdown(socket.SHUT_WR)
        resp = Reader(sock).read_response()
    assert resp.status == 400
    server.wait_for_log("client closed the connection before the end of the request body")
    line = next(l for l in server.log.splitlines() if "client closed the connection" in l)
    assert "[INFO]" in line and "400" in line
    if mode == "streamed":
        assert "POST /upload-size: refused request body" in line
    assert "Traceback" not in server.log and "[ERROR]" not in server.log, server.log


def test_invalid_chunk_is_a_client_error(serve):
    server = serve("behaviours")
    with server.connect() as sock:
        sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"4\r\nabcd\r\nzz\r\n")
        resp = Reader(sock).read_response()
    assert resp.status == 400
    # Received before the application runs: refused without calling it.
    server.wait_for_log("refused (400): invalid chunk size")
    assert "Traceback" not in server.log and "[ERROR]" not in server.log, server.log


@pytest.mark.parametrize("framing", sorted(CUT_SHORT))
def test_application_sees_client_disconnected(serve, framing):
    server = serve("behaviours", *MODES["streamed"])
    with server.connect() as sock:
        sock.sendall(CUT_SHORT[framing].replace(b"/upload-size", b"/body-error"))
        sock.shutdown(socket.SHUT_WR)
        resp = Reader(sock).read_response()
    assert resp.status == 200
    assert resp.body.startswith(b"ferrule.ClientDisconnected oserror=True: client closed the connection"), resp.body


@pytest.mark.parametrize("mode", ["spooled", "streamed"])
def test_quiet_uploader_is_a_client_error(serve, mode):
    server = serve("behaviours", *MODES[mode], "--socket-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(CUT_SHORT["length"])
        resp = Reader(sock).read_response()
    assert resp.status == 408
    server.wait_for_log("request body: client made no progress within socket_timeout")
    assert "Traceback" not in server.log and "[ERROR]" not in server.log, server.log
