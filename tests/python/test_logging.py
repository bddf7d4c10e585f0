"""The error log and the access log."""

import re
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import FERRULE, ROOT

ACCESS = re.compile(
    r'^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] '
    r'"GET /list3\?a=1 HTTP/1\.1" 200 13 "http://ref/" "agent/1\.0"$'
)


def test_access_log_combined_format(serve, tmp_path):
    log = tmp_path / "access.log"
    server = serve("behaviours", "--access-logfile", str(log))
    httpx.get(server.url + "/list3?a=1", headers={"Referer": "http://ref/", "User-Agent": "agent/1.0"})
    httpx.get(server.url + "/exc-before", headers={"User-Agent": 'quote"d'})
    server.stop()
    lines = log.read_text().splitlines()
    assert ACCESS.match(lines[0]), lines[0]
    assert ' 500 ' in lines[1] and '"quote\\"d"' in lines[1]


def test_access_log_to_stderr(serve):
    server = serve("behaviours", "--access-logfile", "-")
    httpx.get(server.url + "/list3")
    server.wait_for_log('"GET /list3 HTTP/1.1" 200 13')


def test_client_errors_are_info_and_app_errors_are_error(serve):
    server = serve("behaviours")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        sock.recv(1000)
    server.wait_for_log("[INFO] 127.0.0.1:")
    server.wait_for_log("refused (400): missing Host header")
    httpx.get(server.url + "/exc-before")
    server.wait_for_log("[ERROR] Error handling request GET /exc-before")


def test_log_level_filters(serve, tmp_path):
    path = tmp_path / "quiet.sock"
    server = serve("behaviours", "--log-level", "error", bind=[f"unix:{path}"], expect_ready=False)
    import socket
    import time
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(path))
            break
        except OSError:
            assert time.monotonic() < deadline, server.log
            time.sleep(0.05)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(path))
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
        sock.recv(1000)
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        client.get("http://localhost/exc-before")
    server.wait_for_log("[ERROR] Error handling request")
    assert "refused (400)" not in server.log
    assert "Listening at" not in server.log


def test_error_logfile(serve, tmp_path):
    log = tmp_path / "error.log"
    server = serve("behaviours", "--error-logfile", str(log), expect_ready=False)
    import time
    deadline = time.monotonic() + 20
    while "Listening at" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_readme_settings_table_matches_the_declaration():
    generated = subprocess.run(
        [FERRULE, "--print-settings-reference"], capture_output=True, text=True, check=True
    ).stdout
    readme = (ROOT / "README.md").read_text()
    assert generated.strip() in readme, "README settings table is stale: run `make docs`"
