"""ferrule behind Apache httpd (mod_proxy_uwsgi, mod_proxy_fcgi,
mod_proxy_scgi) and lighttpd (mod_fastcgi, mod_scgi, mod_cgi running
`ferrule --cgi`), each a real process with its own configuration file
(tests/python/frontends/): the same application answers the same through
each as over HTTP, where the protocols allow."""

import hashlib
import json
import os

import httpx
import pytest

from conftest import APPS, FERRULE, Server
from gateways import Apache, Lighttpd


@pytest.fixture(scope="module")
def lighttpd(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lighttpd")
    socks = {name: str(tmp / f"{name}.sock") for name in ("fastcgi", "scgi", "http")}
    server = Server("gateway_app", "--threads", "2", listeners=3, bind=[
        f"fastcgi://unix:{socks['fastcgi']}", f"scgi://unix:{socks['scgi']}", f"unix:{socks['http']}"])
    front = Lighttpd(tmp / "front", fastcgi=socks["fastcgi"], scgi=socks["scgi"], ferrule=FERRULE, apps=APPS)
    yield front, server, socks
    front.stop()
    server.kill()


@pytest.fixture(scope="module")
def apache(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("apache")
    server = Server("gateway_app", "--threads", "2", listeners=3,
                    bind=["uwsgi://127.0.0.1:0", "fastcgi://127.0.0.1:0", "scgi://127.0.0.1:0"])
    ports = [int(url.rsplit(":", 1)[1]) for url in server.urls]
    front = Apache(tmp / "front", *ports)
    yield front, server
    front.stop()
    server.kill()


def direct_environ(socks, path, query):
    """The environ the application sees over HTTP, for comparison."""
    transport = httpx.HTTPTransport(uds=socks["http"])
    with httpx.Client(transport=transport, base_url="http://localhost") as client:
        return client.get(path + "?" + query).json()


LIGHTTPD_ROUTES = ["/fcgi", "/scgi", "/cgi-bin/app.cgi"]
APACHE_ROUTES = ["/uwsgi", "/fcgi", "/scgi"]


def check_environ(env, mount, expected_script_name, path_info):
    assert env["SCRIPT_NAME"] == expected_script_name
    assert env["PATH_INFO"] == path_info
    assert env["QUERY_STRING"] == "x=1&y=%C3%A9"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("mount", LIGHTTPD_ROUTES)
def test_lighttpd_environ(lighttpd, mount):
    front, _, socks = lighttpd
    env = httpx.get(f"{front.url}{mount}/caf%C3%A9?x=1&y=%C3%A9").json()
    path = "/café".encode().decode("latin-1")
    check_environ(env, mount, mount, path)
    over_http = direct_environ(socks, "/caf%C3%A9", "x=1&y=%C3%A9")
    assert over_http["PATH_INFO"] == env["PATH_INFO"]
    if mount == "/cgi-bin/app.cgi":
        assert env["GATEWAY_INTERFACE"] == "CGI/1.1"


@pytest.mark.parametrize("mount", APACHE_ROUTES)
def test_apache_environ(apache, mount):
    front, _ = apache
    env = httpx.get(f"{front.url}{mount}/caf%C3%A9?x=1&y=%C3%A9").json()
    # mod_proxy_uwsgi sends the mount as SCRIPT_NAME; mod_proxy_fcgi and
    # mod_proxy_scgi send the whole path (an application under a prefix
    # takes --script-name there).
    if mount == "/uwsgi":
        check_environ(env, mount, "/uwsgi", "/café".encode().decode("latin-1"))
    else:
        check_environ(env, mount, "", (mount + "/café").encode().decode("latin-1"))


def exercise(base):
    """Uploads, streams, statuses, cookies and failures through one route."""
    data = os.urandom(5 * 1024 * 1024)
    env = httpx.post(base + "/up", content=data, timeout=60).json()
    assert (env["_body_size"], env["_body_sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    assert httpx.get(base + "/stream").text == "".join(f"part {i}\n" for i in range(50))
    resp = httpx.head(base + "/x")
    assert resp.status_code == 200 and resp.content == b""
    resp = httpx.get(base + "/missing")
    assert (resp.status_code, resp.text) == (404, "nothing here\n")
    assert resp.reason_phrase in ("Not Here", "Not Found")
    assert httpx.get(base + "/cookies").headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]
    assert httpx.get(base + "/fail").status_code == 500
    assert httpx.get(base + "/after").status_code == 200


@pytest.mark.parametrize("mount", LIGHTTPD_ROUTES)
def test_lighttpd_responses(lighttpd, mount):
    front, server, _ = lighttpd
    exercise(front.url + mount)
    if mount != "/cgi-bin/app.cgi":
        server.wait_for_log("RuntimeError: gateway app failure")


@pytest.mark.parametrize("mount", APACHE_ROUTES)
def test_apache_responses(apache, mount):
    front, server = apache
    exercise(front.url + mount)
    server.wait_for_log("RuntimeError: gateway app failure")


def test_readme_recipes_are_the_tested_configuration():
    """The README's Apache, lighttpd and CGI-script blocks are copied from
    the files these tests run, with example paths and ports."""
    from pathlib import Path

    from gateways import FRONTENDS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    fields = {"{uwsgi_port}": "3031", "{fastcgi_port}": "9000", "{scgi_port}": "4000",
              "{upstream_fastcgi}": "/run/app-fcgi.sock", "{upstream_scgi}": "/run/app-scgi.sock",
              "{cgi_dir}": "/srv/myapp/cgi-bin", "{ferrule}": "/srv/myapp/.venv/bin/ferrule",
              "{apps}": "/srv/myapp", "{app}": "myproject.wsgi"}
    for name, fence in (("apache.conf", "apache"), ("lighttpd.conf", "lighttpd"), ("app.cgi", "sh")):
        text = (FRONTENDS / name).read_text().replace("{{", "{").replace("}}", "}")
        for field, value in fields.items():
            text = text.replace(field, value)
        blocks = [b.split("```", 1)[0] for b in readme.split(f"```{fence}\n")[1:]]
        assert any(block.strip() in text and len(block.strip()) > 40 for block in blocks), name
