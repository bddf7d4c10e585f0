"""The response side of PEP 3333: start_response, write(), iteration,
framing, close(), file_wrapper, and what happens when the app misbehaves."""

import json
import os
import socket
import threading
import time
from urllib.parse import quote

import httpx
import pytest

from conftest import Reader, Server, exchange


@pytest.fixture(scope="module")
def app():
    server = Server("behaviours", "--threads", "4")
    yield server
    server.kill()


def get(server, path, version="1.1", method="GET", extra=b""):
    raw = f"{method} {path} HTTP/{version}\r\nHost: t\r\n".encode() + extra + b"\r\n"
    return exchange(server, raw, head_request=(method == "HEAD"))


def closed_tags(server):
    return json.loads(get(server, "/closed").body)


def test_status_reason_phrase_is_kept(app):
    resp = get(app, "/status?s=" + quote("299 Quite Custom Reason"))
    assert (resp.status, resp.reason) == (299, "Quite Custom Reason")
    assert resp.body == b"body"


@pytest.mark.parametrize(
    "status, reason",
    [
        ("200", "is not a three-digit code"),
        ("OK", "is not a three-digit code"),
        ("2000 X", "is not a three-digit code"),
        ("600 Nope", "is not a three-digit code"),
        ("200 a\r\nX-Injected: 1", "contains a control character"),
        ("200 a\x00", "contains a control character"),
    ],
)
def test_invalid_status_is_a_500_with_reason_logged(app, status, reason):
    resp = get(app, "/status?s=" + quote(status))
    assert resp.status == 500
    assert resp.header("X-Injected") is None
    app.wait_for_log(f"ValueError: status \"{status[:5]}")
    app.wait_for_log(reason)


@pytest.mark.parametrize(
    "name, value, reason",
    [
        ("X-Bad", "a\r\nSet-Cookie: evil=1", "control character"),
        ("X-Bad", "a\nb", "control character"),
        ("X-Bad", "a\x00b", "control character"),
        ("Bad Name", "v", "not a valid token"),
        ("Connection", "close", "hop-by-hop"),
        ("Transfer-Encoding", "chunked", "hop-by-hop"),
        ("Upgrade", "h2c", "hop-by-hop"),
        ("X-Snowman", "\u2603", "not latin-1"),
    ],
)
def test_invalid_headers_are_a_500(app, name, value, reason):
    resp = get(app, f"/header?name={quote(name)}&value={quote(value)}")
    assert resp.status == 500
    assert resp.header("Set-Cookie") is None
    app.wait_for_log(reason)


def test_headers_must_be_pairs(app):
    assert get(app, "/headers-not-list").status == 500


def test_exception_before_start_response_is_500_with_traceback(app):
    resp = get(app, "/exc-before")
    assert resp.status == 500
    assert resp.header("Connection") == "close"
    app.wait_for_log("RuntimeError: the app failed before start_response")
    app.wait_for_log("Error handling request GET /exc-before")


def read_until_close(server, request):
    with server.connect() as sock:
        sock.sendall(request)
        data = b""
        while True:
            block = sock.recv(65536)
            if not block:
                return data
            data += block


@pytest.mark.parametrize("threads", ["1", "4"])
def test_each_block_is_sent_before_the_next_is_pulled(serve, tmp_path, threads):
    """PEP 3333: a block may not wait for the one after it. The app yields
    two blocks and then waits for the client to say it has both."""
    server = serve("behaviours", "--threads", threads)
    flag = tmp_path / "got-both"
    with server.connect() as sock:
        sock.sendall(f"GET /wait-for-file?path={quote(str(flag))} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        sock.settimeout(8)
        data = b""
        while b"second\n" not in data:
            block = sock.recv(65536)
            assert block, data
            data += block
        flag.touch()
        while not data.endswith(b"0\r\n\r\n"):
            block = sock.recv(65536)
            assert block, data
            data += block
    assert b"released\n" in data


def test_exception_after_headers_aborts_the_connection(app):
    raw = read_until_close(app, b"GET /exc-after HTTP/1.1\r\nHost: t\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert b"first chunk" in raw
    assert not raw.endswith(b"0\r\n\r\n"), "no last chunk: the client can tell"
    app.wait_for_log("failure inside the response iterable")
    assert "exc_after" in closed_tags(app), "close() is called after an exception"


def test_exc_info_replaces_unsent_headers(app):
    resp = get(app, "/exc-info-replace")
    assert (resp.status, resp.reason) == (503, "Custom Unavailable")
    assert resp.body == b"replaced"


def test_exc_info_after_headers_sent_reraises(app):
    raw = read_until_close(app, b"GET /exc-info-after-sent HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"partial" in raw and b"never" not in raw
    assert not raw.endswith(b"0\r\n\r\n")
    app.wait_for_log("KeyError: 'too late'")


def test_second_start_response_without_exc_info_is_an_error(app):
    assert get(app, "/twice").status == 500
    app.wait_for_log("start_response() called a second time without exc_info")


def test_write_callable(app):
    resp = get(app, "/write")
    assert resp.status == 200 and resp.body == b"written directly"
    resp = get(app, "/write-and-iter")
    assert resp.body == b"written, then iterated"


def test_lazy_start_response_in_generator(app):
    resp = get(app, "/lazy")
    assert (resp.status, resp.reason, resp.body) == (201, "Created Lazily", b"lazy body")


def test_generator_may_replace_headers_before_first_output(app):
    resp = get(app, "/lazy-error")
    assert (resp.status, resp.reason, resp.body) == (500, "Changed Mind", b"error page")


def test_list_result_gets_content_length(app):
    resp = get(app, "/list3")
    assert resp.header("Content-Length") == str(len(b"one two three"))
    assert resp.header("Transfer-Encoding") is None
    assert resp.body == b"one two three"


def test_unknown_length_is_chunked_on_http11(app):
    resp = get(app, "/gen")
    assert resp.header("Transfer-Encoding") == "chunked"
    assert resp.header("Content-Length") is None
    assert resp.body == b"abcdef"


def test_unknown_length_closes_on_http10(app):
    with app.connect() as sock:
        sock.sendall(b"GET /gen HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.header("Transfer-Encoding") is None
        assert resp.header("Connection") == "close"
        assert resp.body == b"abcdef"


def test_empty_generator_gets_content_length_zero(app):
    resp = get(app, "/empty-gen")
    assert resp.header("Content-Length") == "0" and resp.body == b""


def test_content_length_from_app_is_honoured(app):
    with app.connect() as sock:
        sock.sendall(b"GET /cl-more HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.body == b"12345"
        assert reader.closed(), "more output than declared: cut, and the connection closed"
        assert reader.buf == b""
    raw = read_until_close(app, b"GET /cl-less HTTP/1.1\r\nHost: t\r\n\r\n")
    assert b"Content-Length: 10\r\n" in raw and raw.endswith(b"\r\n\r\n12345"), "less than declared: closed"


MIXED = b"".join(bytes([65 + i]) * n for i, n in enumerate([5, 40000, 16384, 16383, 1, 200000, 7]))


@pytest.mark.parametrize("mode", ["list", "gen", "write"])
@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_large_and_small_pieces_arrive_in_order(app, mode, version):
    # Large pieces go out from the application's bytes objects, small ones
    # are copied: both kinds, in every framing, must interleave exactly.
    resp = get(app, f"/mixed-large?mode={mode}", version=version)
    assert resp.status == 200
    assert resp.body == MIXED
    if mode == "list":
        assert resp.header("Content-Length") == str(len(MIXED))
    elif version == "1.1":
        assert resp.header("Transfer-Encoding") == "chunked"


@pytest.mark.parametrize("mode", ["list", "gen", "write"])
def test_large_pieces_are_cut_at_declared_length(app, mode):
    cut = 5 + 40000 + 100
    raw = read_until_close(app, f"GET /mixed-large?mode={mode}&cl={cut} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert f"Content-Length: {cut}".encode() in head
    assert body == MIXED[:cut], "cut exactly at the declared length, then closed"


def test_large_body_to_head_request_sends_no_body(app):
    with app.connect() as sock:
        sock.sendall(b"HEAD /mixed-large HTTP/1.1\r\nHost: t\r\n\r\nGET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        head = reader.read_response(head_request=True)
        assert head.header("Content-Length") == str(len(MIXED))
        assert reader.read_response().body == b"one two three"


def test_head_has_headers_but_no_body(app):
    with app.connect() as sock:
        sock.sendall(b"HEAD /list3 HTTP/1.1\r\nHost: t\r\n\r\nGET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        head = reader.read_response(head_request=True)
        assert head.header("Content-Length") == "13"
        get_resp = reader.read_response()
        assert get_resp.body == b"one two three", "the HEAD response carried no body bytes"


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_no_body_statuses(app, status):
    with app.connect() as sock:
        sock.sendall(f"GET /no-content?s={quote(status)} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        resp = reader.read_response()
        assert resp.status == int(status[:3])
        assert resp.header("Transfer-Encoding") is None
        assert resp.header("X-A") == "1"
        assert reader.read_response().body == b"one two three"


def test_date_and_server_headers(app):
    resp = get(app, "/list3")
    assert resp.header("Server") == "ferrule"
    assert resp.header("Date").endswith(" GMT")


def test_str_body_is_a_500(app):
    assert get(app, "/str-body").status == 500
    app.wait_for_log("response body items must be bytes, not str")


def test_body_without_start_response_is_a_500(app):
    assert get(app, "/no-start-response").status == 500
    app.wait_for_log("before calling start_response()")


def test_close_is_called_on_success_and_when_client_goes_away(app):
    get(app, "/gen")
    assert "gen" in closed_tags(app)
    with app.connect() as sock:
        sock.sendall(b"GET /slow-stream?n=50&delay=0.05 HTTP/1.1\r\nHost: t\r\n\r\n")
        sock.recv(100)
    deadline = time.monotonic() + 10
    while "slow_stream" not in closed_tags(app):
        assert time.monotonic() < deadline, "close() not called after the client went away"
        time.sleep(0.1)


def test_file_wrapper_sends_regular_file_from_position(app, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    resp = get(app, f"/file?path={quote(str(path))}&seek=1000")
    assert resp.status == 200
    assert resp.header("Content-Length") == str(len(data) - 1000)
    assert resp.body == data[1000:]
    # An app's Content-Length caps what is sent.
    resp = get(app, f"/file?path={quote(str(path))}&cl=10")
    assert resp.body == data[:10]
    # HEAD sends no file bytes.
    resp = get(app, f"/file?path={quote(str(path))}", method="HEAD")
    assert resp.header("Content-Length") == str(len(data))


def test_concurrent_large_files_are_sent_whole(tmp_path):
    # Large files are sent in turns, one connection at a time per worker:
    # every download must still arrive whole and exact.
    content = os.urandom(6 << 20)
    path = tmp_path / "large.bin"
    path.write_bytes(content)
    server = Server("behaviours", "--threads", "4")
    try:
        bodies = []

        def download():
            bodies.append(httpx.get(f"{server.url}/file?path={quote(str(path))}", timeout=30).content)

        threads = [threading.Thread(target=download) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(bodies) == 6 and all(b == content for b in bodies)
    finally:
        server.kill()


def test_stalled_large_download_gives_its_turn_away(tmp_path):
    # A client that stops reading a large file must not hold up another
    # download of the same worker until its socket timeout (60 s here).
    content = os.urandom(16 << 20)
    path = tmp_path / "large.bin"
    path.write_bytes(content)
    server = Server("behaviours", "--threads", "2", "--socket-timeout", "60")
    try:
        with server.connect() as stalled:
            stalled.sendall(f"GET /file?path={quote(str(path))} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            stalled.recv(1)  # the response has begun; it is never read further
            resp = httpx.get(f"{server.url}/file?path={quote(str(path))}", timeout=30)
            assert resp.content == content
    finally:
        server.kill()


def test_streamed_response_stays_on_its_thread(tmp_path):
    # With several threads, next() and close() of a response must run on
    # the thread that called the application (thread-locals, context
    # variables). Slow readers make the server wait between chunks.
    server = Server("behaviours", "--threads", "4")
    try:
        chunks, errors = [], []

        def slow_reader():
            try:
                with server.connect(timeout=30) as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
                    sock.sendall(b"GET /affinity?n=40&size=65536 HTTP/1.0\r\n\r\n")
                    data = b""
                    while True:
                        block = sock.recv(65536)
                        if not block:
                            break
                        data += block
                        time.sleep(0.001)
                    chunks.extend(data.partition(b"\r\n\r\n")[2].splitlines())
            except Exception as e:  # reported below
                errors.append(e)

        stop = threading.Event()

        def busy():
            # Keeps the other threads busy, so that work moves between them.
            while not stop.is_set():
                get(server, "/list3")

        readers = [threading.Thread(target=slow_reader) for _ in range(8)]
        load = [threading.Thread(target=busy) for _ in range(4)]
        for t in readers + load:
            t.start()
        for t in readers:
            t.join()
        stop.set()
        for t in load:
            t.join()
        assert not errors
        assert len(chunks) == 8 * 40
        assert all(c.startswith(b"same") for c in chunks), "a chunk was produced on another thread"
        verdicts = json.loads(get(server, "/affinity-closes").body)
        assert verdicts == [True] * 8, "close() ran on another thread"
    finally:
        server.kill()


def test_file_wrapper_on_file_like_iterates(app):
    resp = get(app, "/filelike")
    assert resp.body == b"x" * 10000 + b"end"


def test_file_wrapper_with_http10(app, tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(b"0123456789")
    resp = get(app, f"/file?path={quote(str(path))}&seek=3", version="1.0")
    assert resp.body == b"3456789"


def test_input_kept_after_its_request_refuses_io(app):
    assert get(app, "/keep-input").body == b"kept"
    assert get(app, "/use-kept-input").body.startswith(b"ValueError: I/O operation")


def test_callables_kept_on_a_keep_alive_connection_stay_with_their_request(app):
    """start_response and write() kept past their request refuse to act, and
    the next requests on the connection get objects of their own."""
    with app.connect() as sock:
        reader = Reader(sock)
        for path in ("/keep-callables", "/list3", "/write", "/use-kept-callables"):
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
            resp = reader.read_response()
            assert resp.status == 200, (path, resp.body)
        assert json.loads(resp.body) == {
            "errors": [
                "start_response() called after the request ended",
                "write() called after the request ended",
            ],
            "fresh": True,
        }


def test_one_connection_serves_different_bodies_and_writes_in_turn(app):
    """Each request on a keep-alive connection sees its own body and sends
    its own response, whatever the requests before it did."""
    with app.connect() as sock:
        reader = Reader(sock)
        for i in range(30):
            body = f"body {i} ".encode() * (i + 1)
            if i % 3 == 0:
                sock.sendall(b"POST /input?op=read HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
                             + f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n")
                assert json.loads(reader.read_response().body) == [body.decode()]
            elif i % 3 == 1:
                sock.sendall(f"POST /input?op=readline HTTP/1.1\r\nHost: t\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                             + body)
                assert json.loads(reader.read_response().body) == [body.decode(), ""]
            else:
                sock.sendall(b"GET /write HTTP/1.1\r\nHost: t\r\n\r\n")
                assert reader.read_response().body == b"written directly"


def test_input_kept_on_a_keep_alive_connection_stays_with_its_request(app):
    """The next requests on the same connection do not revive it."""
    with app.connect() as sock:
        reader = Reader(sock)
        for path in ("/keep-input", "/list3", "/use-kept-input"):
            sock.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc".encode())
            body = reader.read_response().body
        assert body.startswith(b"ValueError: I/O operation"), body
