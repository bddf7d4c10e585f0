"""HTTP/1.1 conformance (RFC 9112): the raw request corpus under
tests/requests fed whole, line by line, byte by byte and in random splits;
keep-alive and pipelining; every limit at and one past; timeouts."""

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import SPLIT_MODES, Reader, Server, exchange, send_in_pieces

CORPUS = Path(__file__).resolve().parents[1] / "requests"
VALID = sorted(CORPUS.glob("valid/*.http"))
INVALID = sorted(CORPUS.glob("invalid/*.http"))


@pytest.fixture(scope="module")
def echo():
    server = Server("echo", "--threads", "2")
    yield server
    server.kill()


@pytest.fixture(scope="module")
def app():
    server = Server("behaviours", "--threads", "2")
    yield server
    server.kill()


@pytest.mark.parametrize("mode", SPLIT_MODES)
@pytest.mark.parametrize("case", VALID, ids=lambda p: p.stem)
def test_valid_corpus(echo, case, mode):
    expected = json.loads(case.with_suffix(".json").read_text())
    resp = exchange(echo, case.read_bytes(), mode)
    assert resp.status == 200, resp
    env = json.loads(resp.body)
    for key, value in expected.items():
        assert env.get(key) == value, key


@pytest.mark.parametrize("mode", SPLIT_MODES)
@pytest.mark.parametrize("case", INVALID, ids=lambda p: p.stem)
def test_invalid_corpus_never_reaches_the_app(echo, case, mode):
    status = int(case.stem.split("_")[0])
    with echo.connect() as sock:
        send_in_pieces(sock, case.read_bytes(), mode)
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == status, case.stem
        assert resp.header("Connection") == "close"
        assert b"REQUEST_METHOD" not in resp.body, "the app never saw it"
        assert reader.closed()


def test_keep_alive_and_pipelining_in_order(app):
    with app.connect() as sock:
        sock.sendall(
            b"GET /status?s=201+One HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /input?op=read HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello"
            b"GET /status?s=202+Three HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        reader = Reader(sock)
        assert reader.read_response().status == 201
        second = reader.read_response()
        assert json.loads(second.body) == ["hello"]
        assert reader.read_response().status == 202
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        assert reader.read_response().body == b"one two three"


def test_http10_keep_alive(app):
    with app.connect() as sock:
        reader = Reader(sock)
        for _ in range(3):
            sock.sendall(b"GET /list3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            resp = reader.read_response()
            assert resp.version == "HTTP/1.0"
            assert resp.header("Connection") == "keep-alive"
        sock.sendall(b"GET /list3 HTTP/1.0\r\n\r\n")
        assert reader.read_response().header("Connection") == "close"
        assert reader.closed()


def test_connection_close_is_honoured(app):
    with app.connect() as sock:
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().header("Connection") == "close"
        assert reader.closed()


def test_unread_body_is_drained_for_the_next_request(app):
    with app.connect() as sock:
        body = b"x" * 200_000
        sock.sendall(b"POST /input?op=none HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        assert reader.read_response().body == b"one two three"


def test_unread_chunked_body_is_drained(app):
    with app.connect() as sock:
        sock.sendall(b"POST /input?op=none HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        assert reader.read_response().body == b"one two three"


# --- limits, each at the limit and one past ----------------------------------

def request_with_target(length):
    target = "/" + "a" * (length - 1)
    return f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


def test_request_line_limit(serve):
    server = serve("behaviours", "--limit-request-line", "100")
    line_len = lambda n: len(b"GET ") + n + len(b" HTTP/1.1")  # noqa: E731
    at = 100 - line_len(0)
    assert exchange(server, request_with_target(at)).status == 404
    assert exchange(server, request_with_target(at + 1)).status == 414


def test_header_count_limit(serve):
    server = serve("behaviours", "--limit-request-fields", "5")
    fields = lambda n: b"".join(b"X-%d: v\r\n" % i for i in range(n))  # noqa: E731
    assert exchange(server, b"GET /list3 HTTP/1.1\r\nHost: t\r\n" + fields(4) + b"\r\n").status == 200
    assert exchange(server, b"GET /list3 HTTP/1.1\r\nHost: t\r\n" + fields(5) + b"\r\n").status == 431


def test_header_field_size_limit(serve):
    server = serve("behaviours", "--limit-request-field-size", "50")
    # name "X-Big" (5) + value: at the limit and one past.
    at = b"X-Big: " + b"v" * 45 + b"\r\n"
    past = b"X-Big: " + b"v" * 46 + b"\r\n"
    assert exchange(server, b"GET /list3 HTTP/1.1\r\nHost: t\r\n" + at + b"\r\n").status == 200
    assert exchange(server, b"GET /list3 HTTP/1.1\r\nHost: t\r\n" + past + b"\r\n").status == 431


def test_gunicorn_spelling_of_field_size_flag(serve):
    server = serve("behaviours", "--limit-request-field_size", "50")
    past = b"X-Big: " + b"v" * 46 + b"\r\n"
    assert exchange(server, b"GET /list3 HTTP/1.1\r\nHost: t\r\n" + past + b"\r\n").status == 431


def test_head_size_limit(serve):
    server = serve("behaviours", "--limit-request-head", "200")
    base = b"GET /list3 HTTP/1.1\r\nHost: t\r\nX-Pad: "
    pad_at = 200 - len(base) - 4
    assert exchange(server, base + b"p" * pad_at + b"\r\n\r\n").status == 200
    assert exchange(server, base + b"p" * (pad_at + 1) + b"\r\n\r\n").status == 431


def test_body_size_limit(serve):
    server = serve("behaviours", "--limit-request-body", "1000")
    ok = b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n" + b"b" * 1000
    assert json.loads(exchange(server, ok).body)["size"] == 1000
    too_big = b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n" + b"b" * 1001
    assert exchange(server, too_big).status == 413


def test_chunked_body_size_limit(serve):
    server = serve("behaviours", "--limit-request-body", "1000")
    def chunked(n):
        return b"POST /upload-size HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % n + b"c" * n + b"\r\n0\r\n\r\n"
    assert json.loads(exchange(server, chunked(1000)).body)["size"] == 1000
    resp = exchange(server, chunked(1001))
    assert resp.status == 413
    server.wait_for_log("chunked body larger than limit_request_body")


def test_header_timeout_gives_408(serve):
    server = serve("behaviours", "--header-timeout", "0.5")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n")  # never finishes the head
        reader = Reader(sock)
        t0 = time.monotonic()
        resp = reader.read_response()
        assert resp.status == 408
        assert time.monotonic() - t0 < 5
        assert reader.closed()


def test_slow_head_is_cut_at_deadline_not_per_byte(serve):
    server = serve("behaviours", "--header-timeout", "1")
    with server.connect() as sock:
        request = b"GET /list3 HTTP/1.1\r\nHost: t\r\nX-Slow: " + b"s" * 40
        start = time.monotonic()
        status = None
        try:
            for byte in request:
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            pass
        status = Reader(sock).read_response().status
        assert status == 408
        assert time.monotonic() - start < 5


def test_keep_alive_idle_timeout_closes(serve):
    server = serve("behaviours", "--keep-alive", "0.5")
    with server.connect() as sock:
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        assert reader.closed(timeout=5), "idle connection closed after --keep-alive"
        assert reader.buf == b"", "closed silently"


def test_keep_alive_zero_closes_after_each_response(serve):
    server = serve("behaviours", "--keep-alive", "0")
    with server.connect() as sock:
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().header("Connection") == "close"
        assert reader.closed()


def test_idle_connections_do_not_hold_application_threads(serve):
    # Idle connections that held the four threads would hold them for the
    # 60 s of --keep-alive, past the client's 20 s timeout.
    server = serve("behaviours", "--threads", "4", "--keep-alive", "60", "--header-timeout", "60")
    idle = []
    try:
        for _ in range(200):
            s = server.connect()
            s.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
            Reader(s).read_response()
            idle.append(s)  # kept open and idle, keep-alive
        # Plus slow clients that never finish their head.
        for _ in range(20):
            s = server.connect()
            s.sendall(b"GET / HTTP/1.1\r\n")
            idle.append(s)
        resp = httpx.get(server.url + "/list3", timeout=20)
        assert resp.text == "one two three", "a new client is answered while 220 connections idle"
    finally:
        for s in idle:
            s.close()


def test_worker_connections_limit_queues_extra_clients(serve):
    server = serve("behaviours", "--worker-connections", "2", "--keep-alive", "2")
    a, b = server.connect(), server.connect()
    try:
        for s in (a, b):
            s.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
            Reader(s).read_response()
        c = server.connect()
        c.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        c.settimeout(0.5)
        with pytest.raises(socket.timeout):
            c.recv(1)  # waits in the backlog while two connections are open
        a.close()
        c.settimeout(10)
        assert Reader(c).read_response().status == 200
        c.close()
    finally:
        a.close()
        b.close()


def most_calls_at_once(server, requests, seconds):
    """Sends `requests` requests to the /overlap route at once, each on its
    own connection; the most calls the application saw at the same time."""
    socks = [server.connect() for _ in range(requests)]
    try:
        for sock in socks:
            sock.sendall(f"GET /overlap?s={seconds} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        results = []
        for sock in socks:
            sock.settimeout(30)
            results.append(int(Reader(sock).read_response().body))
    finally:
        for sock in socks:
            sock.close()
    return max(results)


def test_concurrent_requests_share_threads(serve):
    server = serve("behaviours", "--threads", "4")
    assert most_calls_at_once(server, 4, 1) == 4, "four sleeping requests ran at once on four threads"


def still_running(sock):
    """True if nothing has come back on `sock` yet."""
    sock.setblocking(False)
    try:
        sock.recv(1, socket.MSG_PEEK)
        return False
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def test_request_arriving_during_a_slow_call_is_served_meanwhile(serve):
    """With a thread to spare, a request that arrives while a slow call runs
    is served by another thread at once, not after the call."""
    server = serve("behaviours", "--threads", "2")
    with server.connect() as slow:
        slow.sendall(b"GET /sleep?s=3&reached=slow HTTP/1.1\r\nHost: t\r\n\r\n")
        server.wait_for_log("app reached: slow")  # the slow call is running
        for _ in range(3):
            assert httpx.get(server.url + "/list3", timeout=10).text == "one two three"
        assert still_running(slow)
        assert Reader(slow).read_response().body == b"slept"


def test_requests_queued_behind_a_slow_call_are_served_meanwhile(serve):
    """Requests ready at the same moment as a slow one, and queued behind
    it, are taken by another thread while the slow call runs."""
    server = serve("behaviours", "--threads", "2")
    for _ in range(3):
        socks = [server.connect() for _ in range(4)]
        try:
            requests = [b"GET /sleep?s=2 HTTP/1.1\r\nHost: t\r\n\r\n"] + [
                b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n"
            ] * 3
            for sock, request in zip(socks, requests):
                sock.sendall(request)
            for quick in socks[1:]:
                assert Reader(quick).read_response().body == b"one two three"
            assert still_running(socks[0])
            assert Reader(socks[0]).read_response().body == b"slept"
        finally:
            for sock in socks:
                sock.close()


def test_calls_at_once_never_outnumber_threads(serve):
    server = serve("behaviours", "--threads", "2")
    assert most_calls_at_once(server, 6, 0.4) == 2, "two threads: two calls at once, never more"


def test_silent_connections_do_not_slow_accepting(serve):
    """Connections that never send a byte must not delay the ones that do
    (a slowloris crowd against the accept loop)."""
    server = serve("behaviours", "--threads", "1", "--header-timeout", "30")
    silent = [server.connect() for _ in range(200)]
    try:
        t0 = time.monotonic()
        assert httpx.get(server.url + "/list3", timeout=10).text == "one two three"
        assert time.monotonic() - t0 < 3
    finally:
        for s in silent:
            s.close()
