"""HTTP/2 (RFC 9113): over TLS by ALPN with gunicorn's --http-protocols, in the
clear with prior knowledge (--http2-cleartext) from trusted peers, every stream a
WSGI request through the same driver as HTTP/1's. Real clients (httpx with h2,
curl, h2load) and, for what they cannot send, frames crafted with the `h2`
library on a raw socket."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest

from conftest import run_ferrule, wait_until
from gateways import FRONTENDS, free_port, wait_for_port
from test_tls import client_context, issue, make_ca

H2 = ("--http-protocols", "h2,h1")
CLEARTEXT = (*H2, "--http2-cleartext", "prior-knowledge")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    issue(d, "ca", "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    return d


def tls_args(pki):
    return ("--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server.key"))


class RawH2:
    """An HTTP/2 client connection on a plain socket, driven frame by frame
    with the `h2` library: for what real clients never send."""

    def __init__(self, port, settings=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events = []
        self.closed = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            try:
                self.sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                # The server has closed; what it sent first is still read.
                self.closed = True

    def _readable(self):
        """Whether the server sent bytes not read yet (after it closed)."""
        try:
            self.sock.setblocking(False)
            return bool(self.sock.recv(1, socket.MSG_PEEK))
        except OSError:
            return False
        finally:
            self.sock.setblocking(True)

    def request(self, path, method="GET", extra=(), body=None, end=True, authority="localhost"):
        stream = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "http"), (":authority", authority), (":path", path), *extra]
        self.conn.send_headers(stream, headers, end_stream=end and body is None)
        self.flush()
        if body is not None:
            self.send_body(stream, body, end)
        return stream

    def send_body(self, stream, body, end=True):
        """Sends `body` on `stream` as the server's windows allow."""
        while body:
            window = min(self.conn.local_flow_control_window(stream), self.conn.max_outbound_frame_size)
            if window <= 0:
                before = len(self.events)
                self.pump(lambda ev: len(ev) > before)
                continue
            piece, body = body[:window], body[window:]
            self.conn.send_data(stream, piece, end_stream=end and not body)
            self.flush()

    def pump(self, until, timeout=10):
        """Reads frames until until(events) is true; returns the events."""
        deadline = time.monotonic() + timeout
        while not until(self.events):
            if self.closed and not self._readable():
                raise AssertionError(f"connection closed; events: {self.events}")
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events: {self.events}")
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                self.closed = True
                continue
            try:
                received = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                # Frames after the server's GOAWAY (RFC 9113 §6.8: its
                # PING before the final GOAWAY), which the library will
                # not take once the connection is over for it.
                if self.conn.state_machine.state == h2.connection.ConnectionState.CLOSED:
                    self.events.append(h2.events.ConnectionTerminated())
                    self.closed = True
                    continue
                raise
            for event in received:
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            self.flush()
        return self.events

    def response(self, stream, timeout=10):
        """(status, headers dict, body, ended cleanly) of `stream`."""
        def over(events):
            return any(isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset)) and e.stream_id == stream
                       for e in events)
        events = self.pump(over, timeout)
        headers, body, clean = {}, b"", False
        for e in events:
            if getattr(e, "stream_id", None) != stream:
                continue
            if isinstance(e, h2.events.ResponseReceived):
                headers = {k.decode(): v.decode() for k, v in e.headers}
            elif isinstance(e, h2.events.DataReceived):
                body += e.data
            elif isinstance(e, h2.events.StreamEnded):
                clean = True
        return int(headers.get(":status", 0)), headers, body, clean

    def reset_of(self, stream, timeout=10):
        events = self.pump(lambda ev: any(isinstance(e, h2.events.StreamReset) and e.stream_id == stream
                                          for e in ev), timeout)
        return next(e for e in events if isinstance(e, h2.events.StreamReset) and e.stream_id == stream)

    def close(self):
        self.sock.close()


def test_h2_over_tls_by_alpn_serves_the_same_environ(pki, serve):
    server = serve("gateway_app", *tls_args(pki), *H2, bind=["https://127.0.0.1:0"])
    body = os.urandom(3 * 1024 * 1024 + 5)
    with httpx.Client(http2=True, verify=client_context(pki), timeout=30) as client:
        r = client.get(server.url + "/env?x=1", headers={"X-Custom": "v"})
        assert r.http_version == "HTTP/2"
        env = r.json()
        posted = client.post(server.url + "/upload", content=body)
        # Several requests on the connection, one after another.
        for _ in range(5):
            assert client.get(server.url + "/missing").status_code == 404
    assert posted.http_version == "HTTP/2"
    assert posted.json()["_body_size"] == len(body)
    assert posted.json()["_body_sha256"] == hashlib.sha256(body).hexdigest()
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["HTTP_HOST"] == f"127.0.0.1:{server.port}"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["QUERY_STRING"] == "x=1"
    assert env["PATH_INFO"] == "/env"
    # An HTTP/1.1 client on the same listener is still served HTTP/1.1.
    with httpx.Client(verify=client_context(pki)) as client:
        r = client.get(server.url + "/env")
    assert r.http_version == "HTTP/1.1"
    assert r.json()["SERVER_PROTOCOL"] == "HTTP/1.1"
    # curl, by name, negotiating h2.
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(pki / "ca.pem"), "-o", "/dev/null",
                          "-w", "%{http_version}", f"https://localhost:{server.port}/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "2"


def test_h2_behind_a_tcp_load_balancer(pki, serve, tmp_path):
    """HAProxy passing TLS through (mode tcp) with the PROXY protocol: the
    client settles h2 with ferrule itself, and its address reaches the
    environ."""
    server = serve("gateway_app", *tls_args(pki), *H2, "--proxy-protocol", bind=["https://127.0.0.1:0"])
    port = free_port()
    conf = tmp_path / "haproxy.cfg"
    conf.write_text((FRONTENDS / "haproxy-tcp.cfg").read_text().format(
        port=port, upstream=f"127.0.0.1:{server.port}"))
    proc = subprocess.Popen(["haproxy", "-f", str(conf), "-db"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, proc, lambda: "")
        out = subprocess.run(["curl", "-sS", "--http2", "--interface", "127.0.0.2", "--cacert",
                              str(pki / "ca.pem"), "-w", " %{http_version}",
                              f"https://localhost:{port}/env"], capture_output=True, text=True, timeout=30)
    finally:
        proc.terminate()
        proc.wait(10)
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit(" ", 1)
    env = json.loads(body)
    assert version == "2"
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    assert env["HTTPS"] == "on"


def test_mutual_tls_over_h2(pki, serve):
    issue(pki, "ca", "h2client", "/CN=carol", "extendedKeyUsage=clientAuth\n")
    server = serve("gateway_app", *tls_args(pki), *H2, "--ca-certs", str(pki / "ca.pem"), "--cert-reqs",
                   "required", bind=["https://127.0.0.1:0"])
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(pki / "ca.pem"), "--cert",
                          str(pki / "h2client.pem"), "--key", str(pki / "h2client.key"), "-w", " %{http_version}",
                          f"https://localhost:{server.port}/env"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    body, version = out.stdout.rsplit(" ", 1)
    env = json.loads(body)
    assert version == "2"
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"] == "CN=carol"
    # Without a certificate: refused in the handshake.
    out = subprocess.run(["curl", "-sS", "--http2", "--cacert", str(pki / "ca.pem"),
                          f"https://localhost:{server.port}/env"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0


def test_django_over_h2_and_over_tls_http_1_1(pki, serve, tmp_path):
    blob = os.urandom(200_000)
    (tmp_path / "blob.bin").write_bytes(blob)
    env = {"DJSITE_DB": str(tmp_path / "db.sqlite3"), "DJSITE_FILE": str(tmp_path / "blob.bin")}
    server = serve("djsite.wsgi", *tls_args(pki), *H2, "--threads", "2", env=env, bind=["https://127.0.0.1:0"])
    for http2 in (True, False):
        with httpx.Client(http2=http2, verify=client_context(pki), timeout=30) as client:
            r = client.get(server.url + "/json/?q=1")
            assert r.http_version == ("HTTP/2" if http2 else "HTTP/1.1")
            assert r.json() == {"path": "/json/", "method": "GET", "q": "1"}
            r = client.post(server.url + "/post/", data={"text": f"h2={http2}"})
            assert r.status_code == 201
            assert client.get(server.url + "/stream/").text == "".join(f"row {i}\n" for i in range(10))
            assert client.get(server.url + "/file/").content == blob


def test_certificates_reload_under_h2load_without_a_failed_request(pki, serve, tmp_path):
    """--reload-certs-every: a renewal (the files replaced, as certbot does)
    is picked up by the running workers; connections open go on, so
    h2load, which never reconnects, loses nothing; new connections get the
    new certificate."""
    live = tmp_path / "live"
    live.mkdir()
    issue(pki, "ca", "renewed", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server.pem", "server.key"):
        (live / name).write_bytes((pki / name).read_bytes())
    server = serve("gateway_app", "--certfile", str(live / "server.pem"), "--keyfile", str(live / "server.key"),
                   *H2, "-w", "2", "--reload-certs-every", "0.2", bind=["https://127.0.0.1:0"])

    def serial():
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
                return tls.getpeercert()["serialNumber"]

    before = serial()
    # For a fixed time, so that it is still running when the workers
    # reload, however fast or loaded the machine.
    load = subprocess.Popen(["h2load", "-D", "6", "-c", "4", "-m", "10", server.url + "/env"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # The renewal: new files renamed over the old ones.
    for name, source in (("server.key", "renewed.key"), ("server.pem", "renewed.pem")):
        (live / f".{name}").write_bytes((pki / source).read_bytes())
        os.replace(live / f".{name}", live / name)
    wait_until(lambda: server.log.count("TLS certificates reloaded") >= 2, what="both workers reloading")
    # Reloaded while the load ran.
    assert load.poll() is None
    after = serial()
    out, _ = load.communicate(timeout=120)
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                     r"(\d+) errored", out)
    assert done, out
    total, finished, succeeded, failed, errored = map(int, done.groups())
    print(f"h2load during the reload: {succeeded} succeeded of {finished} done")
    assert succeeded == finished > 0 and failed == errored == 0, out
    assert before != after
    # A renewal that cannot be used is logged, and the certificate stays.
    (live / "server.key").write_text("not a key")
    wait_until(lambda: "cannot be used, the ones before stay" in server.log, what="the bad renewal logged")
    assert serial() == after


def test_without_h2_in_http_protocols_alpn_offers_only_http_1_1(pki, serve):
    server = serve("gateway_app", *tls_args(pki), bind=["https://127.0.0.1:0"])
    with httpx.Client(http2=True, verify=client_context(pki)) as client:
        r = client.get(server.url + "/env")
    assert r.http_version == "HTTP/1.1"


def test_h2_alone_still_serves_http_1_1_clients_as_gunicorn_does(pki, serve):
    server = serve("gateway_app", *tls_args(pki), "--http-protocols", "h2", bind=["https://127.0.0.1:0"])
    with httpx.Client(http2=True, verify=client_context(pki)) as client:
        assert client.get(server.url + "/env").http_version == "HTTP/2"
    # A client that offers only http/1.1 by ALPN, or nothing, gets HTTP/1.1.
    for alpn in (["http/1.1"], None):
        ctx = client_context(pki)
        if alpn:
            ctx.set_alpn_protocols(alpn)
        with socket.create_connection(("127.0.0.1", server.port)) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                tls.sendall(b"GET /env HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                assert tls.recv(100).startswith(b"HTTP/1.1 200")


def test_h2c_with_prior_knowledge_from_trusted_peers_only(serve):
    server = serve("gateway_app", *CLEARTEXT)
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", server.url + "/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    env = json.loads(out.stdout)
    assert env["SERVER_PROTOCOL"] == "HTTP/2"
    assert env["wsgi.url_scheme"] == "http"
    # HTTP/1.1 on the same listener.
    assert httpx.get(server.url + "/env").json()["SERVER_PROTOCOL"] == "HTTP/1.1"
    # A peer outside --forwarded-allow-ips is served HTTP/1.x only: its
    # preface is a malformed HTTP/1 request.
    untrusted = serve("gateway_app", *CLEARTEXT, "--forwarded-allow-ips", "10.0.0.1")
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", untrusted.url + "/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    # And with --http2-cleartext off (the default), nobody gets h2c.
    plain = serve("gateway_app", *H2)
    out = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", plain.url + "/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0


def test_cookie_fields_are_joined_and_authority_is_the_host(serve):
    server = serve("gateway_app", *CLEARTEXT)
    c = RawH2(server.port)
    s = c.request("/env?q=%20x", extra=[("cookie", "a=1"), ("cookie", "b=2"), ("x-forwarded-proto", "https")],
                  authority="example.test:8443")
    status, headers, body, clean = c.response(s)
    assert (status, clean) == (200, True)
    env = json.loads(body)
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_HOST"] == "example.test:8443"
    assert env["SERVER_NAME"] == "example.test"
    assert env["SERVER_PORT"] == "8443"
    assert env["QUERY_STRING"] == "q=%20x"
    # From a trusted peer, its proxy fields are taken as over HTTP/1.
    assert env["wsgi.url_scheme"] == "https"
    # A Host naming another authority is refused (RFC 9113 §8.3.1).
    s = c.request("/env", extra=[("host", "other.test")], authority="example.test")
    assert c.response(s)[0] == 400
    c.close()


def test_many_streams_at_once_on_one_connection(serve):
    server = serve("gateway_app", *CLEARTEXT, "--threads", "4")
    c = RawH2(server.port)
    bodies = {}
    for i in range(40):
        data = os.urandom(1000 + i * 997)
        # Half with a Content-Length, half without (sent as DATA frames of
        # unknown total length).
        extra = [("content-length", str(len(data)))] if i % 2 else []
        s = c.request(f"/upload/{i}", method="POST", extra=extra, body=data)
        bodies[s] = data
    for s, data in bodies.items():
        status, _, body, clean = c.response(s, timeout=30)
        assert (status, clean) == (200, True)
        got = json.loads(body)
        assert got["_body_size"] == len(data)
        assert got["_body_sha256"] == hashlib.sha256(data).hexdigest()
    c.close()


def test_responses_of_every_shape(serve, tmp_path):
    payload = os.urandom(300_000)
    path = tmp_path / "file.bin"
    path.write_bytes(payload)
    server = serve("behaviours", *CLEARTEXT, "--threads", "2")
    # h2c with prior knowledge: httpx's http1=False.
    transport = httpx.HTTPTransport(http1=False, http2=True)
    with httpx.Client(transport=transport, timeout=30) as client:
        r = client.get(server.url + "/gen")
        assert (r.http_version, r.content) == ("HTTP/2", b"abcdef")
        r = client.get(server.url + "/big", params={"size": 5_000_000, "chunk": 70_000})
        assert len(r.content) == 5_000_000 and r.content == b"z" * 5_000_000
        r = client.get(server.url + "/file", params={"path": str(path)})
        assert r.content == payload
        r = client.get(server.url + "/write")
        assert r.status_code == 200 and r.content
        r = client.head(server.url + "/list3")
        assert (r.status_code, r.content) == (200, b"")
        r = client.get(server.url + "/no-content")
        assert (r.status_code, r.content, r.headers["x-a"]) == (204, b"", "1")
        r = client.get(server.url + "/lazy")
        assert (r.status_code, r.content) == (201, b"lazy body")
        r = client.get(server.url + "/exc-before")
        assert r.status_code == 500
        # HTTP/1's Connection field is not HTTP/2's: left out.
        assert "connection" not in r.headers
    server.wait_for_log("Traceback")


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_application_blocking_on_its_stream_does_not_stop_the_relay(serve, threads):
    """A large write() and wsgi.input read as it comes (--stream-uploads)
    wait on the stream's socket pair, which only the relay drains or fills:
    it must run while every application thread waits."""
    server = serve("behaviours", *CLEARTEXT, "--threads", threads, "--stream-uploads",
                   "--socket-timeout", "5")
    transport = httpx.HTTPTransport(http1=False, http2=True)
    upload = os.urandom(6 * 1024 * 1024)
    with httpx.Client(transport=transport, timeout=30) as client:
        r = client.get(server.url + "/write-big", params={"size": 8 * 1024 * 1024})
        assert r.status_code == 200 and len(r.content) == 8 * 1024 * 1024
        r = client.post(server.url + "/upload-size", content=upload)
        assert r.json() == {"size": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
        # With more threads, two at once.
        if threads == "2":
            results = []
            def one():
                results.append(len(client.get(server.url + "/write-big", params={"size": 4_000_000}).content))
            workers = [threading.Thread(target=one) for _ in range(2)]
            for w in workers:
                w.start()
            for w in workers:
                w.join(30)
            assert results == [4_000_000, 4_000_000]


def test_an_answer_before_the_whole_body_reaches_the_client(serve):
    """A refusal (413) or an application that answers without reading the
    body: the response comes whole, then the stream is reset (RFC 9113
    §8.1), not the other way round."""
    server = serve("behaviours", *CLEARTEXT, "--limit-request-body", "1000")
    c = RawH2(server.port)
    s = c.request("/upload-size", method="POST", extra=[("content-length", "5000000")], body=b"x" * 1000,
                  end=False)
    status, _, body, _ = c.response(s)
    assert status == 413 and body.startswith(b"413")
    # Content-Length 0 with END_STREAM only after the HEADERS frame.
    s = c.request("/list3", method="POST", extra=[("content-length", "0")], end=False)
    c.conn.end_stream(s)
    c.flush()
    assert c.response(s)[2:] == (b"one two three", True)
    c.close()


def test_clients_at_the_stream_limit_are_never_cut_off(serve):
    """h2 frees a stream's place as soon as both sides ended it; ferrule's
    place lasts until the driver is done (close(), hooks). A client that
    opens its next stream in between waits for the place: it is not
    refused, nor counted as resetting."""
    server = serve("behaviours", *CLEARTEXT, "--threads", "2", "--http2-max-concurrent-streams", "4",
                   "--http2-max-reset-streams", "5")
    out = subprocess.run(["h2load", "-n", "3000", "-c", "1", "-m", "4", server.url + "/gen"],
                         capture_output=True, text=True, timeout=60)
    assert "3000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout
    assert "cut off" not in server.log


def test_a_response_cut_short_resets_its_stream(serve):
    server = serve("behaviours", *CLEARTEXT)
    c = RawH2(server.port)
    # The application fails after its first block: the client must not
    # take what came for a whole response.
    s = c.request("/exc-after")
    status, _, body, clean = c.response(s)
    assert not clean and b"second" not in body
    # Fewer bytes than its Content-Length: the same.
    s = c.request("/cl-less")
    status, _, _, clean = c.response(s)
    assert not clean
    # The connection goes on serving.
    s = c.request("/list3")
    assert c.response(s)[2:] == (b"one two three", True)
    c.close()


def test_header_limits_hold_over_h2(serve):
    server = serve("gateway_app", *CLEARTEXT, "--limit-request-fields", "10",
                   "--http2-max-header-list-size", "4096")
    c = RawH2(server.port)
    # At --limit-request-fields (with the host made of :authority): served.
    s = c.request("/env", extra=[(f"x-f{i}", "v") for i in range(9)])
    assert c.response(s)[0] == 200
    # One past: 431.
    s = c.request("/env", extra=[(f"x-f{i}", "v") for i in range(10)])
    assert c.response(s)[0] == 431
    # A header list past --http2-max-header-list-size never reaches the
    # application.
    s = c.request("/env", extra=[("x-big", "v" * 5000)])
    assert c.response(s)[:2] == (431, {":status": "431"})
    s = c.request("/env", extra=[("x-small", "v" * 3000)])
    assert c.response(s)[0] == 200
    # SETTINGS announce the limits.
    remote = c.conn.remote_settings
    assert remote[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS] == 100
    assert remote[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] == 4096
    c.close()


def test_a_connection_idle_past_keep_alive_gets_goaway(serve):
    server = serve("gateway_app", *CLEARTEXT, "--keep-alive", "1")
    c = RawH2(server.port)
    s = c.request("/env")
    assert c.response(s)[0] == 200
    events = c.pump(lambda ev: any(isinstance(e, h2.events.ConnectionTerminated) for e in ev), timeout=10)
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
    c.close()


def test_a_stream_in_flight_finishes_on_graceful_stop(serve):
    server = serve("behaviours", *CLEARTEXT)
    curl = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "-w", " %{http_code}",
                             server.url + "/sleep?s=1&reached=h2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Stopped while the application sleeps: GOAWAY, and the stream begun
    # is answered (nghttp2, in curl, reads the GOAWAY).
    server.wait_for_log("app reached: h2")
    server.send_signal(signal.SIGTERM)
    out, err = curl.communicate(timeout=30)
    assert curl.returncode == 0, err
    assert out == "slept 200"
    assert server.proc.wait(timeout=15) == 0


def test_flask_over_h2_with_tls(pki, serve):
    server = serve("flask_app:app", *tls_args(pki), *H2, bind=["https://127.0.0.1:0"])
    with httpx.Client(http2=True, verify=client_context(pki), timeout=30) as client:
        r = client.get(server.url + "/json")
        assert r.http_version == "HTTP/2"
        assert r.json() == {"message": "hello", "items": [1, 2, 3]}
        r = client.get(server.url + "/stream")
        assert r.status_code == 200 and r.content


def test_h2load_many_streams_all_succeed(serve):
    server = serve("gateway_app", *CLEARTEXT, "--threads", "2")
    out = subprocess.run(["h2load", "-n", "2000", "-c", "4", "-m", "20", server.url + "/env"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "2000 succeeded, 0 failed, 0 errored" in out.stdout, out.stdout


def test_http2_settings_are_checked():
    r = run_ferrule("gateway_app", "--http2-cleartext", "prior-knowledge")
    assert r.returncode == 2
    assert "--http2-cleartext needs h2 in --http-protocols" in r.stderr
    r = run_ferrule("gateway_app", "--http-protocols", "h3")
    assert r.returncode == 2
    assert "'h3' is not h1 or h2" in r.stderr
    r = run_ferrule("gateway_app", "--http2-cleartext", "upgrade", *H2)
    assert r.returncode == 2
    assert "off" in r.stderr and "prior-knowledge" in r.stderr
    r = run_ferrule("gateway_app", "--reload-certs-every", "60")
    assert r.returncode == 2
    assert "--reload-certs-every need --certfile" in r.stderr
    r = run_ferrule("gateway_app", *H2, "--http2-max-frame-size", "1000")
    assert r.returncode == 2
    assert "--http2-max-frame-size" in r.stderr and "16384" in r.stderr
