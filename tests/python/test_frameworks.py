"""Real applications behave under ferrule as under any WSGI server."""

import hashlib
import os

import httpx
import requests

from conftest import Server


def test_flask(serve):
    server = serve("flask_app:app", "--threads", "2")
    base = server.url
    assert httpx.get(base + "/json").json() == {"message": "hello", "items": [1, 2, 3]}
    resp = httpx.post(base + "/form", data={"name": "Zoë", "tag": ["a", "b"]})
    assert resp.json() == {"name": "Zoë", "tags": ["a", "b"]}
    data = os.urandom(5 * 1024 * 1024)
    resp = requests.post(base + "/upload", files={"file": ("big.bin", data)}, data={"note": "five MiB"}, timeout=60)
    assert resp.json() == {
        "filename": "big.bin", "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "note": "five MiB",
    }
    resp = httpx.get(base + "/stream")
    assert resp.text == "".join(f"part {i}\n" for i in range(5))
    assert resp.headers["transfer-encoding"] == "chunked"
    resp = httpx.get(base + "/old")
    assert resp.status_code == 302 and resp.headers["location"].endswith("/json")
    assert httpx.get(base + "/old", follow_redirects=True).json()["message"] == "hello"
    assert httpx.get(base + "/nope").status_code == 404
    assert httpx.get(base + "/teapot").status_code == 418
    resp = httpx.get(base + "/boom")
    assert resp.status_code == 500
    server.wait_for_log("RuntimeError: flask view failed")


def test_django(serve, tmp_path):
    blob = os.urandom(200_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    env = {"DJSITE_DB": str(tmp_path / "db.sqlite3"), "DJSITE_FILE": str(tmp_path / "blob.bin")}
    server = serve("djsite.wsgi", "--threads", "2", env=env)
    base = server.url
    assert httpx.get(base + "/json/?q=1").json() == {"path": "/json/", "method": "GET", "q": "1"}
    resp = httpx.post(base + "/post/", data={"text": "note"})
    assert resp.status_code == 201 and resp.json() == {"stored": "note", "count": 1}
    assert httpx.post(base + "/post/", data={"text": "note"}).json()["count"] == 2
    resp = httpx.get(base + "/stream/")
    assert resp.text == "".join(f"row {i}\n" for i in range(10))
    resp = httpx.get(base + "/file/")
    assert resp.content == blob
    assert httpx.post(base + "/body/", content=b"x" * 70_000).json() == {"len": 70_000}
    # CommonMiddleware's APPEND_SLASH redirect.
    assert httpx.get(base + "/json").status_code == 301


def test_bottle(serve):
    server = serve("bottle_app:app")
    assert httpx.get(server.url + "/hello/world").json() == {"hello": "world"}
    assert httpx.post(server.url + "/echo", content=b"echoed").content == b"echoed"
    assert httpx.get(server.url + "/missing").status_code == 404


def test_falcon(serve):
    server = serve("falcon_app:app")
    assert httpx.get(server.url + "/items/7?q=x").json() == {"id": 7, "q": "x"}
    resp = httpx.put(server.url + "/items/8", json={"a": 1})
    assert resp.status_code == 201 and resp.json() == {"id": 8, "got": {"a": 1}}
    assert httpx.get(server.url + "/items/nope").status_code == 404


def test_paste_middleware_stack(serve):
    server = serve("paste_stack")
    with httpx.Client(base_url=server.url, headers={"Accept-Encoding": "gzip"}) as client:
        first = client.get("/")
        assert first.headers["content-encoding"] == "gzip"
        assert first.text.startswith("count=1 ")
        assert client.get("/").text.startswith("count=2 "), "the session cookie carried the count"
    resp = httpx.get(server.url + "/fail")
    assert resp.status_code == 500
    assert "ValueError" in resp.text and "counter failure for EvalException" in resp.text
