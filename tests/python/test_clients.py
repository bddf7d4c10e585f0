"""Real clients and the limits that protect application threads."""

import hashlib
import json
import os
import signal
import subprocess
import threading
import time

import httpx
import pytest

from conftest import Reader, server_has_read, wait_until


def curl(*args):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=60, check=True).stdout


def test_curl_get_keepalive_and_head(serve):
    server = serve("behaviours")
    out = curl(server.url + "/list3", server.url + "/gen")
    assert out == b"one two threeabcdef"
    head = curl("-I", server.url + "/list3").decode()
    assert head.startswith("HTTP/1.1 200 OK") and "Content-Length: 13" in head


def test_curl_large_upload_uses_expect_100_continue(serve, tmp_path):
    server = serve("behaviours")
    data = os.urandom(3 * 1024 * 1024)
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    # curl sends Expect: 100-continue for bodies over 1 MiB and waits for it.
    out = curl("-v", "--data-binary", f"@{path}", server.url + "/upload-size")
    assert json.loads(out) == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    verbose = subprocess.run(
        ["curl", "-sS", "-v", "--data-binary", f"@{path}", server.url + "/upload-size"],
        capture_output=True, timeout=60,
    ).stderr.decode()
    assert "HTTP/1.1 100 Continue" in verbose


def test_curl_chunked_upload(serve, tmp_path):
    server = serve("behaviours")
    data = b"chunky " * 10000
    path = tmp_path / "c.bin"
    path.write_bytes(data)
    out = curl("-H", "Transfer-Encoding: chunked", "--data-binary", f"@{path}", server.url + "/upload-size")
    assert json.loads(out)["size"] == len(data)


@pytest.mark.parametrize("declared, stream, holds_thread",
                         [(10, False, False), (11, False, False), (11, True, True)],
                         ids=["at-limit", "past-limit", "past-limit-streamed"])
def test_post_buffering_limit(serve, declared, stream, holds_thread):
    """A body is received without a thread, up to --post-buffering in memory
    and past it in a temporary file; with --stream-uploads a larger one is
    read by the application, holding its (only) thread."""
    args = ["--stream-uploads"] if stream else []
    server = serve("behaviours", "--threads", "1", "--post-buffering", "10", "--socket-timeout", "3", *args)
    slow = server.connect()
    try:
        slow.sendall(b"POST /upload-size?reached=slow HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\nhalf"
                     % declared)
        # The server has taken the slow request: accepted it and read all
        # that was sent; streamed, it has also handed it to the application.
        wait_until(lambda: server_has_read(server, slow), what="the server to read the slow request")
        if holds_thread:
            server.wait_for_log("app reached: slow")
        try:
            resp = httpx.get(server.url + "/list3", timeout=1.5)
            answered = resp.text == "one two three"
        except httpx.TimeoutException:
            answered = False
        assert answered is not holds_thread
    finally:
        slow.close()


def test_graceful_timeout_bounds_the_stop(serve):
    server = serve("behaviours", "--graceful-timeout", "0.5")
    result = {}

    def long_request():
        try:
            result["r"] = httpx.get(server.url + "/sleep?s=30&reached=long", timeout=20)
        except httpx.HTTPError as exc:
            result["e"] = exc

    t = threading.Thread(target=long_request)
    t.start()
    server.wait_for_log("app reached: long")  # the request runs when the stop begins
    t0 = time.monotonic()
    code = server.stop(signal.SIGTERM)
    assert code == 0
    assert time.monotonic() - t0 < 10, "exited after graceful_timeout, not after the 30 s request"
    server.wait_for_log("graceful_timeout passed")
    t.join(20)
    assert "e" in result, "the unfinished request was cut"


def test_slow_uploads_hold_no_thread_and_do_not_count_toward_timeout(serve):
    """Eight clients uploading slowly, above --post-buffering, with two
    workers of four threads: the bodies are received before the application
    runs, so other clients are answered meanwhile, and the upload time
    (longer than --timeout) kills no worker."""
    server = serve("behaviours", "-w", "2", "--threads", "4", "--timeout", "1", "--post-buffering", "1000")
    body = os.urandom(5000)
    uploads = []
    try:
        for _ in range(8):
            sock = server.connect(timeout=30)
            sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body))
            uploads.append(sock)
        # The bodies trickle in over about 2.5 s, past the 1 s --timeout.
        for i in range(0, len(body), 500):
            for sock in uploads:
                sock.sendall(body[i:i + 500])
            assert httpx.get(server.url + "/list3", timeout=5).text == "one two three"
            time.sleep(0.25)
        expected = {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        for sock in uploads:
            assert json.loads(Reader(sock).read_response().body) == expected
    finally:
        for sock in uploads:
            sock.close()
    assert "replaced: timeout" not in server.log and "WORKER TIMEOUT" not in server.log.upper()


def test_expect_100_continue_is_answered_when_receiving_starts(serve):
    """Clients that ask for the go-ahead and then hold their bodies back
    hold no thread: the one thread still answers another client."""
    server = serve("behaviours", "--threads", "1")
    waiting = []
    try:
        for _ in range(3):
            sock = server.connect()
            sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n"
                         b"Expect: 100-continue\r\n\r\n")
            assert Reader(sock).read_response().status == 100
            waiting.append(sock)
        assert httpx.get(server.url + "/list3", timeout=5).text == "one two three"
        for sock in waiting:
            sock.sendall(b"y" * 1000)
            assert json.loads(Reader(sock).read_response().body)["size"] == 1000
    finally:
        for sock in waiting:
            sock.close()


def test_spooled_bodies_leave_no_file(serve, tmp_path):
    """A body past --post-buffering waits in an unnamed temporary file in
    $TMPDIR: read back intact, and nothing is ever left in the directory."""
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    server = serve("behaviours", "--post-buffering", "1024", env={"TMPDIR": str(spool_dir)})
    data = os.urandom(3 * 1024 * 1024)
    resp = httpx.post(server.url + "/upload-size", content=data, timeout=60)
    assert resp.json() == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert list(spool_dir.iterdir()) == []
