"""The environ (PEP 3333, "environ Variables"), checked through
wsgiref.validate's validator wrapped around the echo app."""

import json
import socket

import httpx
import pytest

from conftest import Reader, exchange


@pytest.fixture(scope="module")
def echo():
    from conftest import Server

    server = Server("echo", "--threads", "2")
    yield server
    server.kill()


def environ_of(server, raw):
    resp = exchange(server, raw)
    assert resp.status == 200, resp
    return json.loads(resp.body)


def test_required_keys_and_types(echo):
    env = environ_of(echo, b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/a/b"
    assert env["QUERY_STRING"] == "x=1"
    assert env["SERVER_NAME"] == "example.com"
    assert env["SERVER_PORT"] == "8080"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit()
    assert env["RAW_URI"] == env["REQUEST_URI"] == "/a/b?x=1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["HTTP_HOST"] == "example.com:8080"
    assert env["_version"] == [1, 0]
    assert env["_flags"] == {
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
    }
    assert env["_has_file_wrapper"]
    assert "CONTENT_TYPE" not in env and "CONTENT_LENGTH" not in env


def test_single_thread_is_not_multithread(serve):
    server = serve("echo")
    assert httpx.get(server.url).json()["_flags"]["wsgi.multithread"] is False


def test_path_info_is_percent_decoded_then_latin1(echo):
    env = environ_of(echo, b"GET /caf%C3%A9/%e9%20x%2Fy?q=%C3%A9+%20 HTTP/1.1\r\nHost: a\r\n\r\n")
    # UTF-8 bytes arrive as latin-1 code points, as PEP 3333 requires.
    assert env["PATH_INFO"] == "/caf\u00c3\u00a9/\u00e9 x/y"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8", "replace").startswith("/café/")
    assert env["QUERY_STRING"] == "q=%C3%A9+%20"
    assert env["RAW_URI"] == "/caf%C3%A9/%e9%20x%2Fy?q=%C3%A9+%20"


def test_raw_latin1_bytes_in_header_values(echo):
    env = environ_of(echo, b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xe9\r\n\r\n")
    assert env["HTTP_X_NAME"] == "caf\u00e9"


def test_content_type_and_length_only_when_sent(echo):
    env = environ_of(echo, b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["_body"] == "hello"


def test_chunked_body_has_no_content_length(echo):
    env = environ_of(
        echo, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    assert env["_body"] == "abcde"
    assert "CONTENT_LENGTH" not in env
    assert "HTTP_X_TRAILER" not in env, "trailers are never merged into headers"
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"


def test_duplicate_headers_are_joined(echo):
    env = environ_of(
        echo,
        b"GET / HTTP/1.1\r\nHost: a\r\nAccept: a/b\r\nCookie: x=1\r\nAccept: c/d\r\nCookie: y=2\r\n\r\n",
    )
    assert env["HTTP_ACCEPT"] == "a/b, c/d"
    assert env["HTTP_COOKIE"] == "x=1; y=2"


def test_duplicate_headers_with_the_same_value_are_joined(echo):
    """Equal values are joined too, even those Python makes one object
    (a one-character string), and on a keep-alive connection whose previous
    request sent them once."""
    with echo.connect() as sock:
        reader = Reader(sock)
        for head in (b"X-N: 1\r\nX-Long: same\r\n", b"X-N: 1\r\nX-N: 1\r\nX-Long: same\r\nX-Long: same\r\n"):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n" + head + b"\r\n")
            env = json.loads(reader.read_response().body)
        assert env["HTTP_X_N"] == "1, 1"
        assert env["HTTP_X_LONG"] == "same, same"


def test_headers_with_underscores_are_dropped(echo):
    env = environ_of(
        echo, b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"
    )
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"


def test_server_name_falls_back_to_bound_address(echo):
    env = environ_of(echo, b"GET / HTTP/1.0\r\n\r\n")
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(echo.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_host_without_port_and_ipv6_host(echo):
    env = environ_of(echo, b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "80")
    env = environ_of(echo, b"GET / HTTP/1.1\r\nHost: [::1]:9\r\n\r\n")
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9")


def test_server_name_follows_host_on_one_connection(echo):
    # SERVER_NAME/SERVER_PORT are reused across a connection's requests
    # only while the Host header stays the same.
    hosts = [b"one.example:81", b"one.example:81", b"two.example", None, b"one.example:81"]
    with echo.connect() as sock:
        reader = Reader(sock)
        for host in hosts:
            field = b"Host: " + host + b"\r\n" if host else b""
            sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n" + field + b"\r\n")
            env = json.loads(reader.read_response().body)
            expected = {
                b"one.example:81": ("one.example", "81"),
                b"two.example": ("two.example", "80"),
                None: ("127.0.0.1", str(echo.port)),
            }[host]
            assert (env["SERVER_NAME"], env["SERVER_PORT"]) == expected
            assert env["REMOTE_ADDR"] == "127.0.0.1"
            assert env["REMOTE_PORT"] == str(sock.getsockname()[1])


def test_each_request_on_a_connection_has_its_own_method_protocol_and_query(echo):
    # The environ starts from a base holding the usual GET, HTTP/1.1 and
    # empty query: requests that differ must not leave their values behind.
    requests = [
        (b"POST /p?a=1 HTTP/1.1", ("POST", "HTTP/1.1", "a=1")),
        (b"GET /p HTTP/1.1", ("GET", "HTTP/1.1", "")),
        (b"DELETE /p? HTTP/1.0", ("DELETE", "HTTP/1.0", "")),
        (b"GET /p?b=2 HTTP/1.1", ("GET", "HTTP/1.1", "b=2")),
        (b"GET /p HTTP/1.1", ("GET", "HTTP/1.1", "")),
    ]
    with echo.connect() as sock:
        reader = Reader(sock)
        for line, expected in requests:
            sock.sendall(line + b"\r\nHost: h\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
            env = json.loads(reader.read_response().body)
            assert (env["REQUEST_METHOD"], env["SERVER_PROTOCOL"], env["QUERY_STRING"]) == expected


def test_absolute_form_target(echo):
    env = environ_of(echo, b"GET http://other.example:81/p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert env["PATH_INFO"] == "/p"
    assert env["QUERY_STRING"] == "q=1"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("other.example", "81")


def test_script_name_setting(serve):
    server = serve("echo", "--script-name", "/mount")
    env = httpx.get(server.url + "/mount/inner?x").json()
    assert env["SCRIPT_NAME"] == "/mount"
    assert env["PATH_INFO"] == "/inner"
    env = httpx.get(server.url + "/mountain").json()
    assert env["PATH_INFO"] == "/mountain"


def test_wsgi_errors_reach_the_error_log(serve):
    server = serve("behaviours")
    assert httpx.get(server.url + "/errors").text == "logged"
    server.wait_for_log("message to wsgi.errors\n")
    server.wait_for_log("line one\nline two\n")


def test_unix_socket_environ(serve, tmp_path):
    path = tmp_path / "e.sock"
    server = serve("echo", bind=[f"unix:{path}"])
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        env = client.get("http://myhost:1234/x").json()
    assert env["REMOTE_ADDR"] == ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("myhost", "1234")


def test_header_values_follow_each_request_on_a_connection(echo):
    """A connection's requests that send other values, other fields, fields
    in another order, fewer fields, more fields than are kept, or values
    larger than are kept, each see exactly their own headers."""
    big = "v" * 5000
    many = [(f"X-F{i}", f"value {i}") for i in range(40)]
    requests = [
        [("X-A", "one"), ("User-Agent", "ua/1")],
        [("X-B", "one"), ("User-Agent", "ua/1")],
        [("X-A", "two"), ("User-Agent", "ua/1")],
        [("User-Agent", "ua/1"), ("X-A", "two")],
        [("User-Agent", "ua/2")],
        [("X-Big", big), ("X-A", "three")],
        many,
        [("X-F0", "value 0"), ("X-F1", "changed")] + many[2:35],
        [("X-A", "one"), ("User-Agent", "ua/1")],
    ]
    with echo.connect() as sock:
        reader = Reader(sock)
        for fields in requests:
            head = "".join(f"{k}: {v}\r\n" for k, v in fields)
            sock.sendall(f"GET / HTTP/1.1\r\nHost: a\r\n{head}\r\n".encode())
            env = json.loads(reader.read_response().body)
            sent = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in fields}
            got = {k: v for k, v in env.items() if k.startswith("HTTP_") and k != "HTTP_HOST"}
            assert got == sent
