"""The error log and the access log."""

import re
import subprocess
import sys
from pathlib import Path

import httpx

from conftest import APPS, FERRULE, ROOT, Server

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


def test_access_log_dash_is_stdout_as_in_gunicorn(serve):
    server = serve("behaviours", "--access-logfile", "-")
    httpx.get(server.url + "/list3")
    server.wait_for_stdout('"GET /list3 HTTP/1.1" 200 13')
    assert "GET /list3" not in server.log


def test_access_log_format_with_gunicorn_atoms(serve, tmp_path):
    log = tmp_path / "access.log"
    fmt = ('%(h)s|%(l)s|%(u)s|%(r)s|%(m)s|%(U)s|%(q)s|%(H)s|%(s)s|%(B)s|%(b)s|%(f)s|%(a)s|'
           '%(T)s|%(M)s|%(D)s|%(L)s|%(p)s|%({x-request-id}i)s|%({content-type}o)s|%({x-none}o)s|'
           '%({SCRIPT_NAME}e)s|%({wsgi.url_scheme}e)s|%({NOT_THERE}e)s|%(t)s|100%%')
    server = serve("behaviours", "--access-logfile", str(log), "--access-logformat", fmt,
                   "--script-name", "/mount")
    worker = None
    httpx.get(server.url + "/mount/sleep?s=0.05", auth=("alice", "pw"),
              headers={"Referer": "http://r/", "User-Agent": "ua", "X-Request-Id": "id-7"})
    httpx.get(server.url + "/mount/list3?x=%22", headers={b"X-Request-Id": b'forged" 200 1 "x\t\xe9'})
    server.stop()
    first, second = log.read_text().splitlines()
    f = first.split("|")
    assert f[:13] == ["127.0.0.1", "-", "alice", "GET /mount/sleep?s=0.05 HTTP/1.1", "GET", "/mount/sleep",
                      "s=0.05", "HTTP/1.1", "200", f[9], f[9], "http://r/", "ua"], first
    assert int(f[9]) > 0
    seconds, millis, micros, decimal = int(f[13]), int(f[14]), int(f[15]), float(f[16])
    assert seconds == 0 and 50 <= millis < 5000 and millis == micros // 1000
    assert abs(decimal - micros / 1e6) < 1e-6
    assert re.fullmatch(r"<\d+>", f[17])
    assert f[18:24] == ["id-7", "text/plain", "-", "/mount", "http", "-"]
    assert re.fullmatch(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]", f[24])
    assert f[25] == "100%"
    # A header cannot forge fields or lines.
    s = second.split("|")
    assert s[2] == "-" and s[6] == "x=%22"
    assert s[18] == 'forged\\" 200 1 \\"x\\x09\\xe9'


def test_access_log_format_from_a_gunicorn_conf(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(
        'accesslog = "-"\naccess_log_format = \'%(h)s %(r)s %(s)s %({x-forwarded-for}i)s\'\n')
    server = Server("behaviours", "--chdir", str(APPS), cwd=tmp_path)
    try:
        httpx.get(server.url + "/list3", headers={"X-Forwarded-For": "203.0.113.9"})
        server.wait_for_stdout("127.0.0.1 GET /list3 HTTP/1.1 200 203.0.113.9\n")
    finally:
        server.kill()


def test_refused_requests_are_in_the_access_log(serve, tmp_path):
    log = tmp_path / "access.log"
    server = serve("behaviours", "--access-logfile", str(log), "--limit-request-body", "10")
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: 400 before a head exists
        sock.recv(1000)
    with server.connect() as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\nhello world")
        sock.recv(1000)
    server.stop()
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("127.0.0.1 - - [") and lines[0].endswith('"-" 400 - "-" "-"'), lines[0]
    assert '"POST /echo HTTP/1.1" 413 - "-" "-"' in lines[1], lines[1]


def test_a_bad_access_log_format_names_the_atom():
    result = subprocess.run([FERRULE, "behaviours", "--access-logformat", "%(h)s %(Z)s"],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--access-logformat" in result.stderr and "unknown atom %(Z)s" in result.stderr
    assert "{header}i" in result.stderr


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


def test_json_access_log(serve, tmp_path):
    import json

    log = tmp_path / "access.log"
    server = serve("behaviours", "--access-logfile", str(log), "--access-logformat", "json")
    httpx.get(server.url + "/list3?a=1", headers={"User-Agent": 'agent "1"', "Referer": "http://r/"})
    with server.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n\r\n")  # no Host: refused
        sock.recv(1000)
    server.stop()
    first, refused = [json.loads(line) for line in log.read_text().splitlines()]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", first.pop("time"))
    assert first.pop("duration_us") >= 0 and first.pop("pid") > 0
    assert first == {"remote": "127.0.0.1", "method": "GET", "path": "/list3", "query": "a=1",
                     "protocol": "HTTP/1.1", "status": 200, "bytes": 13, "referer": "http://r/",
                     "user_agent": 'agent "1"'}
    assert refused["status"] == 400 and refused["method"] is None and refused["user_agent"] is None


def test_a_response_cut_short_logs_the_bytes_sent(serve, tmp_path):
    """A client that reads 64 KiB of a 64 MiB response (a list, framed
    whole at once) and leaves: the access log counts what reached the
    socket, not the whole body."""
    import socket as socketlib

    log = tmp_path / "access.log"
    size = 64 << 20
    server = serve("behaviours", "--access-logfile", str(log), "--socket-timeout", "2",
                   "--access-logformat", "%(r)s %(s)s %(B)s")
    with server.connect() as sock:
        sock.setsockopt(socketlib.SOL_SOCKET, socketlib.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big-list?mib=64 HTTP/1.1\r\nHost: t\r\n\r\n")
        got = 0
        while got < 65536:
            got += len(sock.recv(65536))
    # The client is gone; the server gives up on the write and logs.
    from conftest import wait_until

    wait_until(lambda: log.exists() and "GET /big-list" in log.read_text(), what="the access log line")
    line = log.read_text().splitlines()[-1]
    sent = int(line.rsplit(" ", 1)[1])
    assert line.startswith("GET /big-list?mib=64 HTTP/1.1 200 ")
    assert 0 < sent < size // 2, line
