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

from conftest import Reader


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


@pytest.mark.parametrize("declared, holds_thread", [(10, False), (11, True)], ids=["at-limit", "past-limit"])
def test_post_buffering_limit(serve, declared, holds_thread):
    """A body up to --post-buffering is awaited without a thread; a larger
    one is read by the application, holding its (only) thread."""
    server = serve("behaviours", "--threads", "1", "--post-buffering", "10", "--socket-timeout", "3")
    slow = server.connect()
    try:
        slow.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\nhalf" % declared)
        time.sleep(0.3)  # let the server take the slow request
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
            result["r"] = httpx.get(server.url + "/sleep?s=30", timeout=20)
        except httpx.HTTPError as exc:
            result["e"] = exc

    t = threading.Thread(target=long_request)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    code = server.stop(signal.SIGTERM)
    assert code == 0
    assert time.monotonic() - t0 < 10, "exited after graceful_timeout, not after the 30 s request"
    server.wait_for_log("graceful_timeout passed")
    t.join(20)
    assert "e" in result, "the unfinished request was cut"
