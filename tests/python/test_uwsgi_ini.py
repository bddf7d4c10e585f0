"""uWSGI ini files run under ferrule: `ferrule --ini uwsgi.ini` with the
options Python deployments use, uWSGI's magic variables, named sections,
and a word in the log for every option ferrule does not map."""

import os
import sys
import textwrap

import httpx

from conftest import Server, run_ferrule, wait_until, worker_pids
from gateways import send_raw, uwsgi_packet

APP = textwrap.dedent('''
    import os

    def application(environ, start_response):
        body = "%s %s %s %s" % (os.environ.get("FROM_INI"), os.environ.get("SECOND"),
                                 environ["wsgi.multithread"], environ["wsgi.multiprocess"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]
''')

# As a Django project ships it, with the options nginx deployments use.
INI = textwrap.dedent('''
    [uwsgi]
    ; the project
    chdir = %d
    module = site_app:application
    master = true
    processes = 2
    threads = 2
    # nginx talks uwsgi on a unix socket; health checks use HTTP
    socket = %(chdir)app.sock
    chmod-socket = 660
    http-socket = 127.0.0.1:0
    vacuum = true
    die-on-term = true
    harakiri = 20
    max-requests = 5000
    buffer-size = 32768
    post-buffering = 8192
    env = FROM_INI=$(INI_ORIGIN)
    env = SECOND=2
    pidfile = %dapp.pid
    disable-logging = true
    static-map = /static=%dstatic
    made-up-option = 1

    [other]
    processes = 3
''')


def project(tmp_path, ini=INI):
    (tmp_path / "site_app.py").write_text(APP)
    (tmp_path / "uwsgi.ini").write_text(ini)
    (tmp_path / "static").mkdir(exist_ok=True)
    (tmp_path / "static" / "site.css").write_text("body {}")
    return tmp_path


def test_a_django_style_uwsgi_ini_runs(tmp_path):
    root = project(tmp_path)
    server = Server(None, "--ini", "uwsgi.ini", bind=[], cwd=root, listeners=2,
                    env={"INI_ORIGIN": "from the environment"})
    try:
        assert len(worker_pids(server, 2)) == 2
        http = [u for u in server.urls if u.startswith("http://")][0]
        # env (with $(VAR)), threads 2, processes 2.
        assert httpx.get(http + "/").text == "from the environment 2 True True"
        sock = root / "app.sock"
        assert f"uwsgi://unix:{sock}" in server.urls
        assert sock.stat().st_mode & 0o777 == 0o660
        # Only the socket's mode: the process umask is untouched.
        assert "umask" not in server.log
        reply = send_raw(str(sock), uwsgi_packet({
            "REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "t",
            "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "t"}))
        assert reply.startswith(b"HTTP/1.1 200 OK") and reply.endswith(b"from the environment 2 True True")
        assert (root / "app.pid").read_text().strip() == str(server.proc.pid)
        log = server.log
        assert "Loaded uWSGI options from uwsgi.ini" in log
        assert "master needs no setting" in log
        # static-map: files served by ferrule itself.
        assert httpx.get(http + "/static/site.css").text == "body {}"
        assert "line 24: 'made-up-option' is not an option ferrule maps" in log
        # Without lazy-apps, uWSGI imports the application before forking.
        assert "imported in the master before forking (uWSGI's default without lazy-apps)" in log
        # disable-logging: no access log on stdout.
        assert server.stdout == ""
    finally:
        server.kill()
    result = run_ferrule("--ini", "uwsgi.ini", "--print-config", cwd=root)
    lines = set(result.stdout.splitlines())
    assert "timeout = 20  (uwsgi.ini)" in lines
    assert "max_requests = 5000  (uwsgi.ini)" in lines
    assert "buffer_size = 32768  (uwsgi.ini)" in lines
    assert "post_buffering = 8192  (uwsgi.ini)" in lines


def test_a_named_section_and_the_command_line_above_it(tmp_path):
    root = project(tmp_path)
    result = run_ferrule("--ini", "uwsgi.ini:other", "site_app", "-w", "4", "--print-config", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "workers = 4  (command line)" in result.stdout.splitlines()
    result = run_ferrule("--ini", "uwsgi.ini:other", "site_app", "--print-config", cwd=root)
    assert "workers = 3  (uwsgi.ini:other)" in result.stdout.splitlines()
    result = run_ferrule("--ini", "uwsgi.ini:missing", "site_app", cwd=root)
    assert result.returncode == 2 and "no [missing] section" in result.stderr


def test_requests_are_logged_unless_disable_logging(tmp_path):
    root = project(tmp_path, "[uwsgi]\nmodule = site_app\nhttp-socket = 127.0.0.1:0\nlazy-apps = true\n")
    server = Server(None, "--ini", "uwsgi.ini", bind=[], cwd=root)
    try:
        httpx.get(server.url + "/hello")
        server.wait_for_stdout('"GET /hello HTTP/1.1" 200')
        assert "imported in the master before forking" not in server.log  # lazy-apps
    finally:
        server.kill()


def test_a_virtualenv_that_is_not_ferrules_is_refused(tmp_path):
    root = project(tmp_path, f"[uwsgi]\nmodule = site_app\nvirtualenv = {tmp_path}/other-venv\n")
    result = run_ferrule("--ini", "uwsgi.ini", cwd=root)
    assert result.returncode == 2
    assert f"virtualenv = {tmp_path}/other-venv is not the environment ferrule runs in" in result.stderr
    (tmp_path / "uwsgi.ini").write_text(f"[uwsgi]\nmodule = site_app\nvirtualenv = {sys.prefix}\n")
    assert run_ferrule("--ini", "uwsgi.ini", "--check-config", cwd=root).returncode == 0
