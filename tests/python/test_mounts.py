"""Several applications under URL prefixes (--mount): real Flask and Django
applications side by side making their own links, the WSGI rules for
SCRIPT_NAME and PATH_INFO at the prefix's edge, over HTTP and a gateway
protocol, and the settings' errors."""

import json
import textwrap

import httpx

from conftest import run_ferrule
from gateways import send_raw, uwsgi_packet


def environ_of(resp):
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_flask_and_django_side_by_side_make_links_under_their_prefixes(serve, tmp_path):
    env = {"DJSITE_DB": str(tmp_path / "db.sqlite3")}
    server = serve("gateway_app", "--mount", "/shop=flask_app:app", "--mount", "/admin/=djsite.wsgi",
                   "--mount", "/env=gateway_app", "-w", "2", "--threads", "2", env=env)
    base = server.url
    where = httpx.get(base + "/shop/where").json()
    assert where == {"json_url": "/shop/json", "external": base + "/shop/json",
                     "script_root": "/shop", "path": "/where"}
    assert httpx.get(base + "/shop/json").json()["message"] == "hello"
    resp = httpx.get(base + "/shop/old")
    assert resp.status_code == 302 and resp.headers["location"] == "/shop/json"
    where = httpx.get(base + "/admin/where/").json()
    assert where == {"json_url": "/admin/json/", "external": base + "/admin/json/",
                     "script_name": "/admin", "path_info": "/where/", "path": "/admin/where/"}
    # Django's APPEND_SLASH redirect keeps the prefix.
    resp = httpx.get(base + "/admin/json")
    assert resp.status_code == 301 and resp.headers["location"] == "/admin/json/"

    # The prefix moves from PATH_INFO to SCRIPT_NAME at a segment boundary
    # only (PEP 3333, "URL Reconstruction").
    cases = {
        "/env": ("/env", ""),
        "/env/": ("/env", "/"),
        "/env/a/b?q=1": ("/env", "/a/b"),
        "/env10": ("", "/env10"),
        "/environ/x": ("", "/environ/x"),
        "/": ("", "/"),
        "/other": ("", "/other"),
        "/shopping": ("", "/shopping"),
        "/%65nv/x": ("/env", "/x"),
    }
    for target, (script_name, path_info) in cases.items():
        got = environ_of(httpx.get(base + target))
        assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == (script_name, path_info), target
    assert environ_of(httpx.get(base + "/env/a?q=1"))["QUERY_STRING"] == "q=1"


def test_without_app_paths_no_mount_takes_are_404(serve):
    server = serve(None, "--mount", "/api=gateway_app", "--access-logfile", "-")
    resp = httpx.get(server.url + "/")
    assert resp.status_code == 404 and resp.text == "Not Found\n"
    assert httpx.get(server.url + "/apix").status_code == 404
    assert environ_of(httpx.get(server.url + "/api/v1"))["PATH_INFO"] == "/v1"
    server.wait_for_stdout('"GET /apix HTTP/1.1" 404')


def test_a_mount_of_slash_is_the_app(serve):
    server = serve(None, "--mount", "/=gateway_app", "--mount", "/a=gateway_app")
    assert environ_of(httpx.get(server.url + "/x"))["PATH_INFO"] == "/x"
    assert environ_of(httpx.get(server.url + "/a/x"))["SCRIPT_NAME"] == "/a"


def test_mounts_go_below_script_name_and_the_forwarded_prefix(serve):
    server = serve("gateway_app", "--mount", "/env=gateway_app", "--script-name", "/site",
                   "--forwarded-prefix")
    got = environ_of(httpx.get(server.url + "/site/env/x"))
    assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == ("/site/env", "/x")
    got = environ_of(httpx.get(server.url + "/site/env/x", headers={"X-Forwarded-Prefix": "/edge"}))
    assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == ("/edge/site/env", "/x")


def test_mounts_over_the_uwsgi_protocol(serve):
    server = serve("gateway_app", "--mount", "/env=gateway_app", bind=["uwsgi://127.0.0.1:0"])
    variables = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/env/a", "PATH_INFO": "/env/a",
                 "QUERY_STRING": "", "SERVER_NAME": "localhost", "SERVER_PORT": "80",
                 "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1"}
    reply = send_raw(server.address, uwsgi_packet(variables))
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), reply[:200]
    got = json.loads(body)
    assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == ("/env", "/a")


def test_bad_mounts_are_refused_with_the_setting_named():
    for args, says in [
        (["--mount", "api=gateway_app"], "must start with '/'"),
        (["--mount", "/api"], "is not PREFIX=APP"),
        (["--mount", "/a/../b=gateway_app"], "must be a plain path"),
        (["--mount", "/api="], "names no application"),
        (["gateway_app", "--mount", "/a=gateway_app", "--mount", "/a/=echo"], "two applications for the prefix '/a'"),
        (["gateway_app", "--mount", "/=echo"], "two applications for the prefix '/'"),
    ]:
        proc = run_ferrule(*args, "--check-config")
        assert proc.returncode == 2, (args, proc.stderr)
        assert "--mount" in proc.stderr and says in proc.stderr, (args, proc.stderr)


def test_a_mount_that_fails_to_load_is_named(serve):
    proc = run_ferrule("gateway_app", "--mount", "/b=no_such_module:app", "--check-config")
    assert proc.returncode == 1
    assert "--mount /b=no_such_module:app: Could not import module 'no_such_module'" in proc.stderr
    server = serve("gateway_app", "--mount", "/b=no_such_module:app", "-w", "2", expect_ready=False)
    assert server.proc.wait(30) == 4
    assert "--mount /b=no_such_module:app" in server.log


def test_uwsgi_ini_mounts(serve, tmp_path):
    (tmp_path / "uwsgi.ini").write_text(textwrap.dedent('''
        [uwsgi]
        module = gateway_app
        mount = /shop=flask_app:app
        mount = /env=gateway_app
        manage-script-name = true
        http-socket = 127.0.0.1:0
    '''))
    server = serve(None, "--ini", str(tmp_path / "uwsgi.ini"), bind=[])
    assert httpx.get(server.url + "/shop/where").json()["json_url"] == "/shop/json"
    got = environ_of(httpx.get(server.url + "/env/x"))
    assert (got["SCRIPT_NAME"], got["PATH_INFO"]) == ("/env", "/x")
    assert "WARNING" not in server.log
