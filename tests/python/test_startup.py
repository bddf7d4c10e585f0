"""Loading the app the ways users write it, listening, and stopping."""

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import httpx
import pytest

from conftest import APPS, FERRULE, Reader, Server, children, listening_line, run_ferrule, wait_until


@pytest.mark.parametrize(
    "spec, body",
    [
        ("pkg.module", "pkg.module"),
        ("pkg.module:application", "pkg.module"),
        ("pkg.module:obj.app", "obj.attr"),
        ("pkg.module:factory()", "factory()[]"),
        ("pkg.module:factory('x', 2)", "factory('x', 2)[]"),
        ("pkg.module:factory('x', debug=True)", "factory('x',)[('debug', True)]"),
        ("file_app.wsgi", "from a .wsgi file"),
        (str(APPS / "pkg" / "module.py"), "pkg.module"),
        (str(APPS / "pkg" / "module.py") + ":obj.app", "obj.attr"),
    ],
)
def test_app_forms(serve, spec, body):
    server = serve(spec)
    assert httpx.get(server.url).text == body


def test_chdir_and_pythonpath(serve, tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "site_app.py").write_text(textwrap.dedent("""
        import helper
        def application(environ, start_response):
            start_response("200 OK", [])
            return [helper.VALUE]
    """))
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "helper.py").write_text("VALUE = b'helped'\n")
    server = serve("site_app", "--chdir", str(tmp_path / "proj"), "--pythonpath", str(tmp_path / "libs"))
    assert httpx.get(server.url).content == b"helped"


def test_import_error_is_explained():
    result = run_ferrule("no_such_module_here")
    assert result.returncode == 4
    err = result.stderr
    assert "Could not import module 'no_such_module_here'" in err
    assert "Traceback" in err
    assert "sys.path searched:" in err and str(APPS) in err
    assert "--chdir or --pythonpath" in err
    # Said once: no respawn loop.
    assert err.count("Failed to load application") == 1


def test_import_error_inside_the_app_shows_its_traceback():
    result = run_ferrule("broken_import")
    assert result.returncode == 4
    assert "this_module_does_not_exist_anywhere" in result.stderr
    assert "broken_import.py" in result.stderr
    result = run_ferrule("raises_on_import")
    assert result.returncode == 4
    assert "RuntimeError: boom at import time" in result.stderr


@pytest.mark.parametrize(
    "spec, message",
    [
        ("pkg.module:missing", "has no attribute 'missing'"),
        ("pkg.module:not_callable", "is a int, not a WSGI callable"),
        ("pkg.module:factory(__import__('os'))", "must be Python literals"),
        ("pkg.module:1+1", "is not a name"),
        ("nowhere/app.py", "does not exist"),
    ],
)
def test_bad_attribute_messages(spec, message):
    result = run_ferrule(spec)
    assert result.returncode == 4, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize(
    "args, names",
    [
        (["--threads", "0"], ["--threads"]),
        (["--log-level", "loud"], ["--log-level", "debug", "critical"]),
        (["-b", "nonsense:port"], ["--bind", "HOST:PORT", "unix:PATH"]),
        (["--keep-alive", "soon"], ["--keep-alive", "seconds"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_settings_name_the_setting(args, names):
    result = run_ferrule("hello", *args)
    assert result.returncode == 2
    for name in names:
        assert name in result.stderr, result.stderr


def test_bad_environment_setting_is_reported():
    result = run_ferrule("pkg.module", env={"FERRULE_THREADS": "many"})
    assert result.returncode == 2
    assert "--threads" in result.stderr


def test_missing_app_argument():
    result = run_ferrule()
    assert result.returncode == 2
    assert "APP" in result.stderr


def test_settings_from_environment(serve):
    server = serve("echo", env={"FERRULE_THREADS": "3"})
    assert httpx.get(server.url).json()["_flags"]["wsgi.multithread"] is True


def test_port_environment_variable_sets_default_bind(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server("pkg.module", bind=[], env={"PORT": str(port)})
    try:
        assert server.url == f"http://0.0.0.0:{port}"
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "pkg.module"
    finally:
        server.kill()


def test_readiness_line_format(serve):
    server = serve("pkg.module")
    line = next(l for l in server.lines if "Listening at:" in l)
    assert f"(pid {server.proc.pid})" in line
    assert line.startswith("[") and "[INFO] Listening at: http://127.0.0.1:" in line


def test_unix_socket_and_stale_file(serve, tmp_path):
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # leaves a socket file nobody listens on
    server = serve("pkg.module", "--umask", "007", bind=[f"unix:{path}"])
    assert server.url == f"unix:{path}"
    assert oct(path.stat().st_mode & 0o777) == oct(0o770)
    transport = httpx.HTTPTransport(uds=str(path))
    with httpx.Client(transport=transport) as client:
        assert client.get("http://localhost/").text == "pkg.module"
    assert server.stop() == 0
    assert not path.exists(), "the socket file is removed on exit"


def test_unix_socket_in_use_is_refused(serve, tmp_path):
    path = tmp_path / "busy.sock"
    serve("pkg.module", bind=[f"unix:{path}"])
    result = run_ferrule("pkg.module", "-b", f"unix:{path}")
    assert result.returncode == 1
    assert "in use" in result.stderr


def test_inherited_fd(tmp_path):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    fd = listener.fileno()
    proc = subprocess.Popen(
        [FERRULE, "pkg.module", "-b", f"fd://{fd}"], cwd=str(APPS), pass_fds=[fd],
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        line = listening_line(proc)
        assert f"Listening at: http://127.0.0.1:{port}" in line
        assert httpx.get(f"http://127.0.0.1:{port}/").text == "pkg.module"
    finally:
        proc.kill()
        proc.wait()
        listener.close()


def test_several_listeners_and_ipv6(serve, tmp_path):
    path = tmp_path / "s.sock"
    server = serve("pkg.module", bind=["127.0.0.1:0", "[::1]:0", f"unix:{path}"], listeners=3)
    assert server.urls[1].startswith("http://[::1]:")
    assert httpx.get(server.urls[1]).text == "pkg.module"
    with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as client:
        assert client.get("http://localhost/").text == "pkg.module"


def test_stop_lets_in_flight_requests_finish(serve):
    sig = signal.SIGTERM
    server = serve("behaviours")
    result = {}

    def slow_request():
        result["response"] = httpx.get(server.url + "/sleep?s=1&reached=in-flight", timeout=10)

    t = threading.Thread(target=slow_request)
    t.start()
    server.wait_for_log("app reached: in-flight")  # the request is in flight before the signal
    server.send_signal(sig)
    server.wait_for_log("stopping")
    # No new connection is accepted once stopping.
    with pytest.raises(httpx.ConnectError):
        for _ in range(50):
            httpx.get(server.url, timeout=1)
            time.sleep(0.05)
    t.join(10)
    assert result["response"].text == "slept"
    assert server.stop() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGQUIT])
def test_fast_stop_does_not_wait(serve, sig):
    server = serve("behaviours")
    errors = []

    def slow_request():
        try:
            httpx.get(server.url + "/sleep?s=30&reached=running", timeout=20)
        except httpx.HTTPError as exc:
            errors.append(exc)

    t = threading.Thread(target=slow_request)
    t.start()
    server.wait_for_log("app reached: running")  # the request runs when the stop begins
    t0 = time.monotonic()
    assert server.stop(sig) == 0
    assert time.monotonic() - t0 < 10, "a fast stop does not wait for the 30 s request"
    t.join(20)
    assert errors, "the running request was cut"


def test_python_m_ferrule(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "ferrule", "pkg.module", "-b", "127.0.0.1:0"],
        cwd=str(APPS), stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        line = listening_line(proc)
        url = line.split("Listening at: ")[1].split()[0]
        assert httpx.get(url).text == "pkg.module"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_serve_api(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import ferrule

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"served by ferrule.serve, threads=" + str(environ["wsgi.multithread"]).encode()]

        ferrule.serve(app, bind="127.0.0.1:0", threads=2)
        print("serve returned", flush=True)
    """))
    proc = subprocess.Popen(
        [sys.executable, str(script)], stderr=subprocess.PIPE, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    try:
        line = listening_line(proc)
        url = line.split("Listening at: ")[1].split()[0]
        assert httpx.get(url).text == "served by ferrule.serve, threads=True"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
        assert b"serve returned" in proc.stdout.read()
    finally:
        proc.kill()


def test_serve_api_rejects_bad_setting(tmp_path):
    code = "import ferrule\ntry:\n    ferrule.serve(lambda e, s: [], threads=0)\nexcept ValueError as e:\n    print('ValueError', e)\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert "ValueError" in result.stdout and "keyword 'threads'" in result.stdout


def test_stop_closes_idle_keep_alive_connections(serve):
    """A graceful stop ends a keep-alive connection that waits for its next
    request at once, not when --keep-alive runs out."""
    from conftest import Reader

    server = serve("behaviours", "--keep-alive", "60", "--graceful-timeout", "60")
    with server.connect() as sock:
        sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\n\r\n")
        reader = Reader(sock)
        assert reader.read_response().status == 200
        server.send_signal(signal.SIGTERM)
        assert reader.closed(timeout=20), "the idle connection was closed by the stop"
        assert reader.buf == b"", "closed silently"
    assert server.stop() == 0


def test_stop_closes_connections_partway_through_a_head(serve):
    """A client that has sent half a head has sent no request to finish: a
    graceful stop closes it at once instead of waiting for --header-timeout."""
    server = serve("behaviours", "-w", "2", "--header-timeout", "120", "--graceful-timeout", "120")
    socks = [server.connect() for _ in range(20)]
    try:
        for sock in socks:
            sock.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        # One complete request proves the workers have taken the connections in.
        with server.connect() as probe:
            probe.sendall(b"GET /list3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert Reader(probe).read_response().status == 200
        server.send_signal(signal.SIGTERM)
        for sock in socks:
            assert Reader(sock).closed(timeout=60), "the partial head was closed by the stop"
        # Well inside the 120 s header and graceful timeouts.
        assert server.stop(timeout=60) == 0
    finally:
        for sock in socks:
            sock.close()


def _nofile(soft, hard):
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_warns_when_descriptors_cannot_cover_worker_connections(serve):
    server = serve("behaviours", "--worker-connections", "1000", preexec_fn=_nofile(256, 256))
    server.wait_for_log("the open-file limit (RLIMIT_NOFILE) is 256, below worker_connections (1000)")
    assert "[WARNING]" in server.log


def test_soft_descriptor_limit_raised_to_the_hard_limit(serve):
    import resource

    # The server starts with a soft limit a quarter of its hard one (the
    # hard one lowered to 4096 where it is larger), and enough connections
    # that no warning is due once the soft limit is raised.
    current = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if current == resource.RLIM_INFINITY or current > 4096 else current
    soft = hard // 4
    server = serve("behaviours", "--worker-connections", str(soft), preexec_fn=_nofile(soft, hard))
    limits = open(f"/proc/{server.proc.pid}/limits").read()
    line = next(l for l in limits.splitlines() if l.startswith("Max open files"))
    assert line.split()[3] == str(hard), line
    assert "RLIMIT_NOFILE" not in server.log


def test_accept_failures_are_logged_at_most_once_a_second(serve):
    """Out of descriptors, accept fails over and over; the log gets one line
    a second with the count, not one a failure."""
    server = serve("behaviours", "--worker-connections", "1000", preexec_fn=_nofile(48, 48))
    socks = []
    try:
        for _ in range(80):
            socks.append(server.connect())
        server.wait_for(lambda: "failure(s) since the last report" in server.log
                        and any(int(n) > 1 for n in re.findall(r"\((\d+) failure\(s\) since", server.log)),
                        timeout=30, what="a report counting several failures")
    finally:
        for sock in socks:
            sock.close()


def test_listen_error_names_the_address_as_written():
    """A host alone means port 8000 (gunicorn's habit); when it cannot be
    used, the error shows the address as a --bind value."""
    result = run_ferrule("hello", "-b", "no-such-host.invalid")
    assert result.returncode == 1
    assert "cannot listen on no-such-host.invalid:8000" in result.stderr, result.stderr


def test_serve_api_settings_and_workers(tmp_path):
    """serve() names the keyword in its errors, lists the settings in its
    help, and with workers=2 forks two workers serving the app object."""
    import ferrule
    import pydoc

    app = lambda environ, start_response: []  # noqa: E731
    with pytest.raises(TypeError, match="unexpected keyword argument 'thredas'"):
        ferrule.serve(app, thredas=2)
    with pytest.raises(ValueError) as bad:
        ferrule.serve(app, threads=0)
    assert str(bad.value) == "invalid value '0' for keyword 'threads': 0 is not in 1..=1024"
    with pytest.raises(ValueError, match="keyword 'hooks'"):
        ferrule.serve(app, hooks="hooks_mod")
    doc = pydoc.render_doc(ferrule.serve, renderer=pydoc.plaintext)
    assert "threads=N" in doc and "preload=True" in doc and "forwarded_for=True" in doc

    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent("""
        import os
        import ferrule

        def app(environ, start_response):
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [str(os.getpid()).encode()]

        ferrule.serve(app, bind="127.0.0.1:0", workers=2)
    """))
    proc = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        url = listening_line(proc).split("Listening at: ")[1].split()[0]
        wait_until(lambda: len(children(proc.pid)) == 2, what="two workers")
        workers = set(children(proc.pid))
        seen = set()
        with httpx.Client() as client:
            for _ in range(40):
                seen.add(int(httpx.get(url, headers={"Connection": "close"}).text))
                if seen == workers:
                    break
        assert seen <= workers and seen
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
