"""TLS on HTTP listeners: gunicorn's --certfile/--keyfile/--ca-certs/--cert-reqs,
https:// binds, the environ mod_ssl users read, and everything a response can be
(streamed, written, a file, a static file, a spooled upload) going out through
the session. The certificates are made by each test run with openssl: a local
CA, a server certificate for localhost and 127.0.0.1, client certificates from
that CA and from a CA the server does not trust."""

import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import time

import httpx
import pytest

from conftest import Server, children, run_ferrule, socket_inodes, tcp_table, wait_until, worker_pids


def worker_holds(server, sock):
    """True once one of `server`'s workers has accepted `sock`'s connection."""
    accepted = tcp_table().get((server.port, sock.getsockname()[1]))
    held = set().union(*(socket_inodes(p) for p in children(server.proc.pid)))
    return accepted is not None and accepted[3] in held


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d, name):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}", cwd=d)


def issue(d, ca, name, subject, ext, key_args=("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256")):
    openssl("req", *key_args, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=d)
    (d / f"{name}.ext").write_text(ext)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "stranger")
    issue(d, "ca", "server", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    issue(d, "ca", "client", "/CN=alice", "extendedKeyUsage=clientAuth\n")
    issue(d, "stranger", "intruder", "/CN=mallory", "extendedKeyUsage=clientAuth\n")
    issue(d, "ca", "bob", "/C=US/O=Example, Inc./CN=bob", "extendedKeyUsage=clientAuth\n")
    issue(d, "ca", "alpha", "/CN=alpha", "subjectAltName=DNS:alpha.test,DNS:*.alpha.test\n")
    issue(d, "ca", "beta", "/CN=beta", "subjectAltName=DNS:beta.test\n")
    # The key formats a PEM key file comes in: PKCS#8 (what req wrote),
    # PKCS#1 (RSA) and SEC1 (EC), and a certificate file with its key in it.
    issue(d, "ca", "rsa", "/CN=localhost", "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
          key_args=("-newkey", "rsa:2048"))
    openssl("rsa", "-in", "rsa.key", "-traditional", "-out", "rsa-pkcs1.key", cwd=d)
    openssl("ec", "-in", "server.key", "-out", "server-sec1.key", cwd=d)
    # Encrypted: PKCS#8 (PBES2, as openssl writes it today) and the old
    # OpenSSL format, which is refused with the way to convert it.
    openssl("pkcs8", "-topk8", "-in", "server.key", "-out", "server-encrypted.key", "-v2", "aes-256-cbc",
            "-passout", "pass:sesame", cwd=d)
    openssl("rsa", "-in", "rsa.key", "-traditional", "-aes256", "-passout", "pass:sesame",
            "-out", "rsa-legacy-encrypted.key", cwd=d)
    (d / "combined.pem").write_text((d / "server.pem").read_text() + (d / "server.key").read_text())
    assert "BEGIN RSA PRIVATE KEY" in (d / "rsa-pkcs1.key").read_text()
    assert "BEGIN EC PRIVATE KEY" in (d / "server-sec1.key").read_text()
    assert "BEGIN PRIVATE KEY" in (d / "server.key").read_text()
    return d


def tls_server(pki, app, *args, bind="https://127.0.0.1:0", **kwargs):
    return Server(app, "--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server.key"),
                  *args, bind=[bind], **kwargs)


def client_context(pki, cert=None, maximum=None):
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    if maximum:
        ctx.maximum_version = maximum
    return ctx


@pytest.fixture
def started():
    servers = []
    yield servers.append
    for server in servers:
        server.kill()


def test_https_serves_the_environ_mod_ssl_users_read(pki, started):
    server = tls_server(pki, "gateway_app")
    started(server)
    assert server.url.startswith("https://127.0.0.1:")
    body = os.urandom(5 * 1024 * 1024 + 3)
    with httpx.Client(verify=client_context(pki), timeout=30) as client:
        # Several requests on one connection, one with an upload large
        # enough to be spooled to a file before the application runs.
        for _ in range(3):
            env = client.get(server.url + "/env?x=1").json()
        posted = client.post(server.url + "/upload", content=body).json()
    assert env["wsgi.url_scheme"] == "https"
    assert env["HTTPS"] == "on"
    assert env["SSL_PROTOCOL"] == "TLSv1.3"
    assert env["SSL_CIPHER"] in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256")
    assert env["SSL_CLIENT_VERIFY"] == "NONE"
    assert "SSL_CLIENT_CERT" not in env
    assert env["QUERY_STRING"] == "x=1"
    assert posted["_body_size"] == len(body)
    assert posted["_body_sha256"] == hashlib.sha256(body).hexdigest()
    # curl too, by name, checking the certificate against the CA.
    port = server.port
    out = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), f"https://localhost:{port}/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["HTTP_HOST"] == f"localhost:{port}"


def test_tls_1_2_is_served_unless_the_minimum_is_1_3(pki, started):
    server = tls_server(pki, "gateway_app")
    started(server)
    with httpx.Client(verify=client_context(pki, maximum=ssl.TLSVersion.TLSv1_2)) as client:
        env = client.get(server.url + "/env").json()
    assert env["SSL_PROTOCOL"] == "TLSv1.2"
    assert env["SSL_CIPHER"].startswith("TLS_ECDHE_ECDSA_WITH_")
    strict = tls_server(pki, "gateway_app", "--ssl-protocol-min", "tls1.3")
    started(strict)
    with pytest.raises(httpx.ConnectError):
        httpx.get(strict.url + "/env", verify=client_context(pki, maximum=ssl.TLSVersion.TLSv1_2))
    assert httpx.get(strict.url + "/env", verify=client_context(pki)).json()["SSL_PROTOCOL"] == "TLSv1.3"


@pytest.mark.parametrize("key", ["rsa-pkcs1.key", "server-sec1.key", None])
def test_key_formats_and_a_key_in_the_certificates_file(pki, started, key):
    if key == "rsa-pkcs1.key":
        args = ["--certfile", str(pki / "rsa.pem"), "--keyfile", str(pki / key)]
    elif key:
        args = ["--certfile", str(pki / "server.pem"), "--keyfile", str(pki / key)]
    else:
        args = ["--certfile", str(pki / "combined.pem")]
    server = Server("behaviours", *args, bind=["https://127.0.0.1:0"])
    started(server)
    assert httpx.get(server.url + "/list3", verify=client_context(pki)).text == "one two three"


def test_client_certificates_required(pki, started):
    server = tls_server(pki, "gateway_app", "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "2")
    started(server)
    env = httpx.get(server.url + "/env", verify=client_context(pki, cert="client")).json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_CERT"] == (pki / "client.pem").read_text()
    assert env["SSL_CLIENT_S_DN"] == "CN=alice"
    assert env["SSL_CLIENT_I_DN"] == "CN=ca"
    serial = subprocess.run(["openssl", "x509", "-in", str(pki / "client.pem"), "-noout", "-serial"],
                            capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
    assert env["SSL_CLIENT_SERIAL"] == env["SSL_CLIENT_M_SERIAL"] == serial.upper()
    for cert in (None, "intruder"):
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            httpx.get(server.url + "/env", verify=client_context(pki, cert=cert))
    server.wait_for_log("TLS handshake failed")
    # curl's client certificate options, as the README shows them.
    out = subprocess.run(["curl", "-sS", "--cacert", str(pki / "ca.pem"), "--cert", str(pki / "client.pem"),
                          "--key", str(pki / "client.key"), server.url + "/env"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["SSL_CLIENT_VERIFY"] == "SUCCESS"


def test_client_certificates_optional(pki, started):
    server = tls_server(pki, "gateway_app", "--ca-certs", str(pki / "ca.pem"), "--cert-reqs", "optional")
    started(server)
    assert httpx.get(server.url + "/env", verify=client_context(pki)).json()["SSL_CLIENT_VERIFY"] == "NONE"
    env = httpx.get(server.url + "/env", verify=client_context(pki, cert="client")).json()
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    # RFC 4514: the last RDN first, a comma in a value escaped.
    env = httpx.get(server.url + "/env", verify=client_context(pki, cert="bob")).json()
    assert env["SSL_CLIENT_S_DN"] == "CN=bob,O=Example\\, Inc.,C=US"
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(server.url + "/env", verify=client_context(pki, cert="intruder"))


def test_every_kind_of_response_goes_through_the_session(pki, started, tmp_path):
    """Streamed responses pulled on the application's thread and sent from
    the sender thread, write(), wsgi.file_wrapper files and static files
    (no sendfile(2) under TLS), with several threads and two workers."""
    (tmp_path / "static").mkdir()
    page = os.urandom(3 * 1024 * 1024)
    (tmp_path / "static" / "page.bin").write_bytes(page)
    wrapped = tmp_path / "wrapped.bin"
    wrapped.write_bytes(os.urandom(2 * 1024 * 1024 + 11))
    server = tls_server(pki, "behaviours", "-w", "2", "--threads", "2", "--response-buffer", "65536",
                        "--static", f"/static={tmp_path / 'static'}")
    started(server)
    with httpx.Client(verify=client_context(pki), timeout=30) as client:
        size = 8 * 1024 * 1024 + 5
        assert client.get(server.url + f"/big?size={size}").content == b"z" * size
        assert client.get(server.url + "/write").text == "written directly"
        assert client.get(server.url + "/write-and-iter").text == "written, then iterated"
        assert client.get(server.url + f"/file?path={wrapped}").content == wrapped.read_bytes()
        assert client.get(server.url + "/static/page.bin").content == page
        ranged = client.get(server.url + "/static/page.bin", headers={"Range": "bytes=10-19"})
        assert ranged.status_code == 206 and ranged.content == page[10:20]


def test_stream_uploads_and_100_continue_over_tls(pki, started):
    server = tls_server(pki, "behaviours", "--stream-uploads", "--post-buffering", "1024")
    started(server)
    body = os.urandom(3 * 1024 * 1024)
    with httpx.Client(verify=client_context(pki), timeout=30) as client:
        r = client.post(server.url + "/upload-size", content=body, headers={"Expect": "100-continue"})
    assert r.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}


def test_a_slow_reader_of_a_streamed_response_over_tls(pki, started):
    """The application's thread waits past --response-buffer for a client
    that does not read yet, writing through the session from its own
    thread and the sender thread, and every byte arrives in order."""
    server = tls_server(pki, "behaviours", "--threads", "2", "--response-buffer", "65536")
    started(server)
    size = 32 * 1024 * 1024 + 1
    tls = client_context(pki).wrap_socket(socket.create_connection(server.address), server_hostname="localhost")
    tls.settimeout(30)
    tls.sendall(f"GET /big?size={size}&chunk=65536 HTTP/1.0\r\n\r\n".encode())
    # Time for the response to fill the kernel's buffers (a few MiB) and
    # the response buffer; what is asserted holds however long it takes.
    time.sleep(0.5)
    # Others are served meanwhile.
    assert httpx.get(server.url + "/list3", verify=client_context(pki)).text == "one two three"
    received = bytearray()
    while block := tls.recv(1 << 16):
        received += block
    tls.close()
    head, body = bytes(received).split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.0 200 OK")
    assert len(body) == size and body == b"z" * size


def test_clients_that_do_not_speak_tls_are_closed_and_logged_at_info(pki, started):
    server = tls_server(pki, "behaviours", "--header-timeout", "1")
    started(server)
    # Plain HTTP to an HTTPS port: a 400 a browser shows, as nginx answers.
    with socket.create_connection(server.address, timeout=10) as plain:
        plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while block := plain.recv(100):
            answer += block
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer
    server.wait_for_log("refused (400): plain HTTP sent to an HTTPS listener (use https://)")
    # Anything else that is not TLS fails the handshake.
    with socket.create_connection(server.address, timeout=10) as garbage:
        garbage.sendall(b"\x01\x02\x03\x04\x05garbage")
        answer = b""
        while block := garbage.recv(100):
            answer += block
        assert answer == b"" or answer.startswith(b"\x15"), answer
    server.wait_for_log("closed: TLS handshake failed")
    # A client that says nothing is closed at --header-timeout.
    with socket.create_connection(server.address, timeout=10) as silent:
        silent.sendall(b"\x16")
        silent.settimeout(10)
        started_at = time.monotonic()
        assert silent.recv(100) == b""
        assert time.monotonic() - started_at < 9
    server.wait_for_log("no TLS handshake within --header-timeout")
    assert "Traceback" not in server.log and "ERROR" not in server.log
    assert httpx.get(server.url + "/list3", verify=client_context(pki)).text == "one two three"


def test_which_listeners_serve_tls(pki, started, tmp_path):
    """gunicorn's rule: with --certfile, TCP listeners that name no scheme
    serve HTTPS; http:// stays plain; a unix socket that names none stays
    plain too."""
    sock = tmp_path / "app.sock"
    server = Server("behaviours", "--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server.key"),
                    bind=["127.0.0.1:0", "http://127.0.0.1:0", f"unix:{sock}"], listeners=3)
    started(server)
    by_default, plain, unix = server.urls
    assert by_default.startswith("https://") and plain.startswith("http://") and unix == f"unix:{sock}"
    assert httpx.get(by_default + "/list3", verify=client_context(pki)).text == "one two three"
    assert httpx.get(plain + "/list3").text == "one two three"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(sock))) as client:
        assert client.get("http://x/list3").text == "one two three"


@pytest.mark.parametrize("args, message", [
    (["-b", "https://127.0.0.1:0"], "an https:// --bind needs --certfile"),
    (["--keyfile", "{pki}/server.key"], "--keyfile, --ssl-keyfile-password, --ca-certs, --cert-reqs and --reload-certs-every need --certfile"),
    (["--ssl-keyfile-password", "-starts-with-a-dash"], "need --certfile"),
    (["--certfile", "{pki}/missing.pem"], "--certfile {pki}/missing.pem"),
    (["--certfile", "{pki}/server.pem", "--keyfile", "{pki}/ca.pem"], "--keyfile {pki}/ca.pem"),
    (["--certfile", "{pki}/server.pem", "--keyfile", "{pki}/server.key", "--cert-reqs", "required"],
     "--cert-reqs optional or required needs --ca-certs"),
    (["--certfile", "{pki}/server.pem", "--keyfile", "{pki}/server.key", "--cert-reqs", "3"],
     "--cert-reqs"),
    (["--certfile", "{pki}/server.pem", "--keyfile", "{pki}/server.key", "--ssl-protocol-min", "tls1.1"],
     "--ssl-protocol-min"),
])
def test_bad_tls_settings_are_refused_by_name(pki, args, message):
    args = [a.format(pki=pki) for a in args]
    result = run_ferrule("behaviours", *args)
    assert result.returncode == 2, result.stderr
    assert message.format(pki=pki) in result.stderr, result.stderr


def test_a_key_that_is_not_the_certificates_is_refused(pki):
    result = run_ferrule("behaviours", "--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "rsa.key"))
    assert result.returncode == 2
    assert "--certfile" in result.stderr and "--keyfile" in result.stderr, result.stderr


def test_tls_survives_workers_being_replaced(pki, started):
    server = tls_server(pki, "behaviours", "-w", "2", "--max-requests", "5")
    started(server)
    with httpx.Client(verify=client_context(pki)) as client:
        for _ in range(30):
            assert client.get(server.url + "/list3", headers={"Connection": "close"}).text == "one two three"
    wait_until(lambda: "Autorestarting worker" in server.log, what="a worker replaced")


def test_gunicorn_config_file_and_granian_flags(pki, started, tmp_path):
    """A gunicorn.conf.py's TLS settings (cert_reqs as the ssl.CERT_* value
    gunicorn documents), and Granian's flag names."""
    (tmp_path / "gunicorn.conf.py").write_text(
        "import ssl\n"
        f"certfile = {str(pki / 'server.pem')!r}\n"
        f"keyfile = {str(pki / 'server.key')!r}\n"
        f"ca_certs = {str(pki / 'ca.pem')!r}\n"
        "cert_reqs = ssl.CERT_OPTIONAL\n"
    )
    app = tmp_path / "tiny.py"
    app.write_text("def application(e, s):\n    s('200 OK', [])\n    return [e['SSL_CLIENT_VERIFY'].encode()]\n")
    server = Server("tiny", cwd=tmp_path, bind=["127.0.0.1:0"])
    started(server)
    assert server.url.startswith("https://")
    assert httpx.get(server.url, verify=client_context(pki)).text == "NONE"
    assert httpx.get(server.url, verify=client_context(pki, cert="client")).text == "SUCCESS"
    granian = Server("tiny", "--ssl-certificate", str(pki / "server.pem"), "--ssl-keyfile", str(pki / "server.key"),
                     "--ssl-ca", str(pki / "ca.pem"), "--cert-reqs", "required", cwd=tmp_path,
                     bind=["127.0.0.1:0"])
    started(granian)
    assert httpx.get(granian.url, verify=client_context(pki, cert="client")).text == "SUCCESS"


def read_response(tls, slowly=False):
    """One response with a Content-Length off `tls`: (head, body)."""
    size, pause = (16384, 0.001) if slowly else (1 << 16, 0)
    data = b""
    while b"\r\n\r\n" not in data:
        block = tls.recv(1 << 16)
        assert block, "closed before the head"
        data += block
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        time.sleep(pause)
        block = tls.recv(size)
        assert block, f"closed after {len(body)} of {length} body bytes"
        body += block
    return head, body


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_end_of_a_streamed_response_is_not_left_in_the_session(pki, started, threads):
    """The last chunk of a streamed response with a Content-Length goes into
    the TLS session while the kernel's buffer is full: its records must
    still leave, and the connection carry the next request."""
    server = tls_server(pki, "behaviours", "--threads", threads)
    started(server)
    tls = client_context(pki).wrap_socket(socket.create_connection(server.address), server_hostname="localhost")
    tls.settimeout(20)
    size = 4 * 1024 * 1024 + 7
    tls.sendall(f"GET /big?size={size}&chunk=100000&cl=1 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    # A client slower than the application: the kernel's buffer is full
    # whenever the application makes its next chunk, the last one too.
    head, body = read_response(tls, slowly=True)
    assert head.startswith(b"HTTP/1.1 200") and len(body) == size and body == b"z" * size
    tls.sendall(b"GET /list3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(tls)[1] == b"one two three"
    tls.close()


def test_connections_end_with_close_notify(pki, started):
    """A client can tell a whole response from one cut short: the server
    ends the connection with TLS's close_notify (RFC 8446 §6.1), which
    Python reports as a clean end only when it came."""
    server = tls_server(pki, "behaviours")
    started(server)
    for request in (b"GET /list3 HTTP/1.0\r\n\r\n", b"GET /list3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        raw = socket.create_connection(server.address)
        tls = client_context(pki).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
        tls.settimeout(20)
        tls.sendall(request)
        data = b""
        while block := tls.recv(1 << 16):  # raises SSLEOFError without close_notify
            data += block
        assert data.endswith(b"one two three")
        tls.close()
    # An idle kept connection the server closes at --keep-alive.
    idle = tls_server(pki, "behaviours", "--keep-alive", "1")
    started(idle)
    raw = socket.create_connection(idle.address)
    tls = client_context(pki).wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    tls.settimeout(20)
    tls.sendall(b"GET /list3 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(tls)[1] == b"one two three"
    assert tls.recv(100) == b""
    tls.close()


def served_certificate(server, pki):
    raw = socket.create_connection(server.address)
    with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.getpeercert(binary_form=True)


def test_hup_reads_the_certificates_again_and_keeps_them_when_the_new_ones_are_bad(pki, started, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text((pki / "server.pem").read_text())
    key.write_text((pki / "server.key").read_text())
    server = Server("behaviours", "-w", "2", "--certfile", str(cert), "--keyfile", str(key),
                    bind=["https://127.0.0.1:0"])
    started(server)
    first = worker_pids(server, 2)
    old = served_certificate(server, pki)
    # A new certificate (another key), in place of the old.
    cert.write_text((pki / "rsa.pem").read_text())
    key.write_text((pki / "rsa.key").read_text())
    server.send_signal(signal.SIGHUP)
    wait_until(lambda: not set(first) & set(children(server.proc.pid)), what="the old workers replaced")
    second = worker_pids(server, 2)
    new = served_certificate(server, pki)
    assert new != old
    # A broken one: logged, and the last good one stays.
    key.write_text("not a key\n")
    server.send_signal(signal.SIGHUP)
    server.wait_for_log("the TLS files cannot be used, so the new workers keep the old ones")
    wait_until(lambda: not set(second) & set(children(server.proc.pid)), what="the workers replaced again")
    worker_pids(server, 2)
    assert served_certificate(server, pki) == new


def test_several_certificates_chosen_by_server_name(pki, started):
    """Repeated --certfile/--keyfile: the client gets the certificate that
    covers the server name it sends (SNI), wildcards included, else the
    first."""
    args = []
    for name in ("server", "alpha", "beta"):
        args += ["--certfile", str(pki / f"{name}.pem"), "--keyfile", str(pki / f"{name}.key")]
    server = Server("behaviours", *args, bind=["https://127.0.0.1:0"])
    started(server)

    def common_name(server_name, check=True):
        ctx = client_context(pki)
        ctx.check_hostname = check
        raw = socket.create_connection(server.address)
        with ctx.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
        for name in ("server", "alpha", "beta"):
            pem = (pki / f"{name}.pem").read_text()
            if ssl.PEM_cert_to_DER_cert(pem) == der:
                return name
        return None

    assert common_name("beta.test") == "beta"
    assert common_name("alpha.test") == "alpha"
    assert common_name("www.alpha.test") == "alpha"
    assert common_name("localhost") == "server"
    assert common_name("unknown.test", check=False) == "server"
    with httpx.Client(verify=client_context(pki)) as client:
        assert client.get(server.url + "/list3").text == "one two three"


def test_one_keyfile_for_each_certfile(pki):
    result = run_ferrule("behaviours", "--certfile", str(pki / "server.pem"), "--certfile", str(pki / "alpha.pem"),
                         "--keyfile", str(pki / "server.key"))
    assert result.returncode == 2
    assert "give one --keyfile for each --certfile" in result.stderr, result.stderr


def test_a_proxy_header_before_the_handshake(pki, started):
    """A load balancer passing TLS through (HAProxy's send-proxy in TCP
    mode) sends its PROXY header in the clear, then the client's TLS."""
    server = tls_server(pki, "gateway_app", "--proxy-protocol")
    started(server)
    v1 = b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 443\r\n"
    v2 = (b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([198, 51, 100, 9, 127, 0, 0, 1])
          + (40000).to_bytes(2, "big") + (443).to_bytes(2, "big"))
    for header, client, split in ((v1, "203.0.113.7", False), (v2, "198.51.100.9", False), (v1, "203.0.113.7", True)):
        raw = socket.create_connection(server.address, timeout=20)
        if split:
            # In two segments, the second once a worker holds the connection
            # (it peeks the first and waits).
            raw.sendall(header[:10])
            wait_until(lambda: worker_holds(server, raw), what="the connection accepted")
            raw.sendall(header[10:])
        else:
            raw.sendall(header)
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET /env HTTP/1.0\r\n\r\n")
            data = b""
            while block := tls.recv(65536):
                data += block
        env = json.loads(data.split(b"\r\n\r\n", 1)[1])
        assert env["REMOTE_ADDR"] == client
        assert env["wsgi.url_scheme"] == "https"
    # Half a header, then the peer closes its side: closed and logged (not
    # waited for, not spun on), and the worker goes on.
    with socket.create_connection(server.address, timeout=20) as half:
        half.sendall(b"PROXY TCP4")
        half.shutdown(socket.SHUT_WR)
        try:
            assert half.recv(100) == b""
        except ConnectionResetError:
            pass  # closed with the half header unread: a reset

    server.wait_for_log("closed before a whole PROXY header")
    # Without the header, from a peer that must send one: closed.
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(server.url + "/env", verify=client_context(pki))
    server.wait_for_log("(--proxy-protocol; --proxy-allow-from peers must send one)")


def test_an_encrypted_key_and_its_password(pki, started, tmp_path):
    assert "BEGIN ENCRYPTED PRIVATE KEY" in (pki / "server-encrypted.key").read_text()
    # The application cannot read the password from its environment.
    (tmp_path / "peek.py").write_text(
        "import os\n"
        "def application(e, s):\n"
        "    s('200 OK', [])\n"
        "    return [os.environ.get('FERRULE_SSL_KEYFILE_PASSWORD', 'absent').encode()]\n")
    server = Server("peek", "--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server-encrypted.key"),
                    cwd=tmp_path, bind=["https://127.0.0.1:0"], env={"FERRULE_SSL_KEYFILE_PASSWORD": "sesame"})
    started(server)
    assert httpx.get(server.url, verify=client_context(pki)).text == "absent"
    base = ["--certfile", str(pki / "server.pem"), "--keyfile", str(pki / "server-encrypted.key")]
    result = run_ferrule("behaviours", *base)
    assert result.returncode == 2 and "is encrypted: give its password with --ssl-keyfile-password" in result.stderr
    result = run_ferrule("behaviours", *base, "--ssl-keyfile-password", "wrong")
    assert result.returncode == 2 and "cannot be decrypted with --ssl-keyfile-password" in result.stderr
    result = run_ferrule("behaviours", "--certfile", str(pki / "rsa.pem"), "--keyfile",
                         str(pki / "rsa-legacy-encrypted.key"), "--ssl-keyfile-password", "sesame")
    assert result.returncode == 2 and "openssl pkcs8 -topk8" in result.stderr, result.stderr
    # The password is never printed.
    result = run_ferrule("behaviours", *base, "--print-config", env={"FERRULE_SSL_KEYFILE_PASSWORD": "sesame"})
    assert "ssl_keyfile_password = (set; not shown)" in result.stdout, result.stdout
    assert "sesame" not in result.stdout + result.stderr
