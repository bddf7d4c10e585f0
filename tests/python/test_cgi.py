"""CGI mode (`ferrule --cgi APP`): the process is one request, as RFC 3875
and PEP 3333's run_with_cgi describe: variables from the environment, the
body from stdin, a `Status:` response on stdout, the log on stderr."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import APPS, FERRULE

CGI_ENV = {
    "GATEWAY_INTERFACE": "CGI/1.1",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "SERVER_NAME": "example.org",
    "SERVER_PORT": "8080",
    "REMOTE_ADDR": "192.0.2.9",
}


def cgi(app, variables, body=b"", *args):
    env = {"PATH": os.environ["PATH"], **CGI_ENV, **variables}
    result = subprocess.run([FERRULE, "--cgi", *args, app], cwd=str(APPS), env=env, input=body,
                            capture_output=True, timeout=60)
    head, _, payload = result.stdout.partition(b"\r\n\r\n")
    return result.returncode, head.decode("latin-1"), payload, result.stderr.decode()


def test_a_request_from_the_environment_and_stdin():
    body = os.urandom(300_000)
    code, head, payload, _ = cgi("echo", {"REQUEST_METHOD": "POST", "PATH_INFO": "/a b", "QUERY_STRING": "x=1",
                                          "CONTENT_LENGTH": str(len(body)), "CONTENT_TYPE": "application/x"}, body)
    assert code == 0
    assert head.startswith("Status: 200 OK\r\n")
    env = json.loads(payload)
    assert env["_body_len"] == len(body) and env["_body"].encode("latin-1") == body
    assert (env["PATH_INFO"], env["QUERY_STRING"], env["REMOTE_ADDR"]) == ("/a b", "x=1", "192.0.2.9")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "8080")
    assert env["_flags"] == {"wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": True,
                             "wsgi.input_terminated": True}
    assert env["wsgi.url_scheme"] == "http"


def test_https_and_a_mount_point():
    code, _, payload, _ = cgi("echo", {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "/cgi-bin/app.cgi",
                                       "PATH_INFO": "/p", "HTTPS": "on"})
    env = json.loads(payload)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["wsgi.url_scheme"]) == ("/cgi-bin/app.cgi", "/p", "https")


def test_streamed_response_and_head():
    code, head, payload, _ = cgi("gateway_app", {"REQUEST_METHOD": "GET", "PATH_INFO": "/stream"})
    assert code == 0 and head == "Status: 200 OK\r\nContent-Type: text/plain"
    assert payload == b"".join(f"part {i}\n".encode() for i in range(50))
    code, head, payload, _ = cgi("gateway_app", {"REQUEST_METHOD": "HEAD", "PATH_INFO": "/x"})
    assert code == 0 and head.startswith("Status: 200 OK") and payload == b""


def test_application_error_is_a_500_with_exit_status_0():
    code, head, payload, log = cgi("gateway_app", {"REQUEST_METHOD": "GET", "PATH_INFO": "/fail"})
    assert code == 0
    assert head.startswith("Status: 500 Internal Server Error")
    assert "RuntimeError: gateway app failure" in log and "Traceback" in log


def test_import_error_is_a_500_with_the_reason_on_stderr():
    code, head, _, log = cgi("raises_on_import", {"REQUEST_METHOD": "GET"})
    assert code == 0 and head.startswith("Status: 500")
    assert "Failed to load application" in log


def test_file_wrapper_is_copied(tmp_path):
    data = os.urandom(200_000)
    (tmp_path / "blob").write_bytes(data)
    code, head, payload, _ = cgi("behaviours", {"REQUEST_METHOD": "GET", "PATH_INFO": "/file",
                                                "QUERY_STRING": f"path={tmp_path / 'blob'}&seek=100"})
    assert code == 0 and head.startswith("Status: 200")
    assert "Content-Length: 199900" in head
    assert payload == data[100:]


def test_without_a_cgi_request_it_says_what_is_missing():
    result = subprocess.run([FERRULE, "--cgi", "echo"], cwd=str(APPS), env={"PATH": os.environ["PATH"]},
                            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "REQUEST_METHOD" in result.stderr and result.stdout == ""
