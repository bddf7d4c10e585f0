"""gunicorn-style configuration: a Python config file read from -c, from
python:MODULE or from ./gunicorn.conf.py, GUNICORN_CMD_ARGS and
FERRULE_CMD_ARGS, in gunicorn's order of precedence; gunicorn's names for
settings; nothing ignored without a word in the log."""

import os
import signal
import textwrap

import httpx

from conftest import APPS, Server, children, run_ferrule, wait_until, worker_pids

APP = textwrap.dedent('''
    import os, threading

    def application(environ, start_response):
        body = "%s %s %s" % (os.environ.get("FROM_RAW_ENV"), environ["wsgi.multithread"], os.getpid())
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]
''')

CONFIG = textwrap.dedent('''
    import multiprocessing

    bind = "127.0.0.1:0"
    workers = 2
    threads = 3
    keepalive = 7
    accesslog = "-"
    loglevel = "INFO"
    raw_env = ["FROM_RAW_ENV=set by the file"]
    worker_tmp_dir = "/dev/shm"
    made_up_setting = 1

    def post_fork(server, worker):
        pass
''')


def project(tmp_path, config_name="gunicorn.conf.py", config=CONFIG):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / config_name).write_text(config)
    return tmp_path


def test_gunicorn_conf_in_the_working_directory_is_read(tmp_path):
    server = Server("app", bind=[], cwd=project(tmp_path))
    try:
        assert len(worker_pids(server, 2)) == 2
        resp = httpx.get(server.url + "/")
        # raw_env reached os.environ; threads = 3 makes wsgi.multithread true.
        assert resp.text.startswith("set by the file True ")
        server.wait_for_stdout('"GET / HTTP/1.1" 200')  # accesslog = "-"
        log = server.log
        assert "Loaded configuration from gunicorn.conf.py" in log
        assert "--worker-tmp-dir is not needed" in log
        assert "[WARNING] gunicorn.conf.py: 'made_up_setting' is not a ferrule setting" in log
        assert "gunicorn.conf.py: hooks post_fork" in log
        assert "multiprocessing" not in log  # an import is not a setting
    finally:
        server.kill()


def test_explicit_file_and_python_module(tmp_path):
    root = project(tmp_path, "settings_file.py", "workers = 2\nbind = '127.0.0.1:0'\n")
    for spec in ("settings_file.py", "python:settings_file"):
        # python:MODULE finds a module in the working directory, as gunicorn does.
        server = Server("app", "-c", spec, bind=[], cwd=root)
        try:
            assert len(worker_pids(server, 2)) == 2
            assert f"Loaded configuration from {spec}" in server.log
        finally:
            server.kill()


def test_precedence_file_then_cmd_args_then_command_line(tmp_path):
    root = project(tmp_path)
    env = {"GUNICORN_CMD_ARGS": "--workers 3 --threads 1", "FERRULE_CMD_ARGS": "--workers 1"}
    server = Server("app", "--threads", "2", bind=["127.0.0.1:0"], cwd=root, env=env)
    try:
        # workers: file 2 < GUNICORN_CMD_ARGS 3 < FERRULE_CMD_ARGS 1;
        # threads: file 3 < GUNICORN_CMD_ARGS 1 < command line 2.
        assert len(worker_pids(server, 1)) == 1
        assert httpx.get(server.url + "/").text.startswith("set by the file True ")
        # The command line's bind replaces the file's, not adds to it.
        assert len(server.urls) == 1
    finally:
        server.kill()


def test_procfile_log_file_flag(tmp_path):
    """`web: ferrule mysite.wsgi --log-file -` (gunicorn's alias of the
    error log) works as in a Procfile."""
    (tmp_path / "app.py").write_text(APP)
    server = Server("app", "--log-file", "-", cwd=tmp_path)
    try:
        assert httpx.get(server.url + "/").status_code == 200
    finally:
        server.kill()


def test_a_failing_config_file_says_so(tmp_path):
    root = project(tmp_path, "broken.conf.py", "workers = undefined_name\n")
    result = run_ferrule("app", "-c", "broken.conf.py", cwd=root)
    assert result.returncode == 2
    assert "-c broken.conf.py: the config file failed" in result.stderr
    assert "NameError" in result.stderr


def test_env_flag(tmp_path):
    """gunicorn's -e KEY=VALUE sets the application's environment."""
    (tmp_path / "app.py").write_text(APP)
    server = Server("app", "-e", "FROM_RAW_ENV=from the flag", cwd=tmp_path)
    try:
        assert httpx.get(server.url + "/").text.startswith("from the flag ")
    finally:
        server.kill()
    result = run_ferrule("app", "-e", "NO_EQUALS_SIGN", cwd=tmp_path)
    assert result.returncode == 2 and "'NO_EQUALS_SIGN' is not KEY=VALUE" in result.stderr


def test_worker_classes(tmp_path):
    """gunicorn's sync and gthread classes are what ferrule does; an
    asynchronous class is refused with the reason, from a flag or a file."""
    (tmp_path / "app.py").write_text(APP)
    for cls in ("sync", "gthread", "gunicorn.workers.gthread.ThreadWorker"):
        result = run_ferrule("app", "-k", cls, "--check-config", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    result = run_ferrule("app", "-k", "gevent", cwd=tmp_path)
    assert result.returncode == 2
    assert "ferrule runs WSGI applications in threads" in result.stderr
    (tmp_path / "gunicorn.conf.py").write_text("worker_class = 'eventlet'\n")
    result = run_ferrule("app", cwd=tmp_path)
    assert result.returncode == 2 and "'eventlet'" in result.stderr


def test_check_config(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "broken.py").write_text("raise RuntimeError('broken at import')\n")
    ok = run_ferrule("app", "--check-config", cwd=tmp_path)
    assert ok.returncode == 0 and "load" in ok.stderr
    bad = run_ferrule("broken", "--check-config", cwd=tmp_path)
    assert bad.returncode == 1 and "broken at import" in bad.stderr


def test_print_config_says_where_each_value_came_from(tmp_path):
    root = project(tmp_path)
    result = run_ferrule("app", "--print-config", "-w", "3", cwd=root,
                         env={"GUNICORN_CMD_ARGS": "--threads 5", "FERRULE_TIMEOUT": "45"})
    assert result.returncode == 0, result.stderr
    lines = set(result.stdout.splitlines())
    assert "workers = 3  (command line)" in lines
    assert "threads = 5  (GUNICORN_CMD_ARGS)" in lines
    assert "keep_alive = 7  (gunicorn.conf.py)" in lines
    assert "timeout = 45  (FERRULE_TIMEOUT)" in lines
    assert "graceful_timeout = 30  (default)" in lines


def test_on_off_settings_take_a_value_or_none(tmp_path):
    """--preload, --preload true, --preload=false, FERRULE_PRELOAD=1,
    GUNICORN_CMD_ARGS="--preload true", preload_app = True: all as written."""
    (tmp_path / "app.py").write_text(APP)

    def preload(*args, env=None, conf=None):
        if conf is not None:
            (tmp_path / "gunicorn.conf.py").write_text(conf)
        result = run_ferrule(*args, "--print-config", cwd=tmp_path, env=env)
        (tmp_path / "gunicorn.conf.py").unlink(missing_ok=True)
        assert result.returncode == 0, result.stderr
        line = [l for l in result.stdout.splitlines() if l.startswith("preload = ")]
        return line[0].split("  (")[0].split(" = ")[1]

    assert preload("app") == "false"
    assert preload("--preload", "app") == "true"
    assert preload("app", "--preload", "true") == "true"
    assert preload("app", "--preload", "False") == "False"
    assert preload("app", "--preload=no") == "no"
    assert preload("app", env={"FERRULE_PRELOAD": "1"}) == "1"
    assert preload("app", env={"GUNICORN_CMD_ARGS": "--preload true --workers 2"}) == "true"
    assert preload("app", conf="preload_app = True\n") == "true"
    assert preload("app", conf="preload_app = False\n") == "false"
    # Not a bool, as gunicorn accepts: still the setting's value, not a word
    # taken for the APP.
    assert preload("app", conf="import os\npreload_app = os.environ.get('NOT_SET_HERE', 'false')\n") == "false"
    assert preload("app", conf="preload_app = 1\n") == "1"
    # The server really preloads: the app is imported once, in the master.
    server = Server("app", "--preload", "true", "-w", "2", cwd=tmp_path)
    try:
        worker_pids(server, 2)
        assert "Booting worker" in server.log
    finally:
        server.kill()
    bad = run_ferrule("app", "--preload=maybe", cwd=tmp_path)
    assert bad.returncode == 2 and "--preload" in bad.stderr


def test_gunicorn_values_that_read_differently(tmp_path):
    """umask as a Python int (0o007 arrives as 7), limit_request_line = 0
    (gunicorn's unlimited), -c file:PATH, wsgi_app instead of APP,
    --log-level warn."""
    (tmp_path / "app.py").write_text(APP)
    sock = tmp_path / "app.sock"
    (tmp_path / "conf.py").write_text(textwrap.dedent(f'''
        bind = "unix:{sock}"
        umask = 0o007
        limit_request_line = 0
        limit_request_field_size = 0
        limit_request_fields = 0
        wsgi_app = "app"
    '''))
    server = Server(None, "-c", "file:conf.py", bind=[], cwd=tmp_path)
    try:
        assert (sock.stat().st_mode & 0o777) == 0o770
        transport = httpx.HTTPTransport(uds=str(sock))
        long_path = "/" + "x" * 20000
        with httpx.Client(transport=transport) as client:
            assert client.get("http://t" + long_path).status_code == 200
    finally:
        server.kill()
    result = run_ferrule("app", "--umask", "0x1ff", "--log-level", "WARN", "--print-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "log_level = WARN  (command line)" in result.stdout
    result = run_ferrule("app", "--umask", "0o1000", cwd=tmp_path)
    assert result.returncode == 2 and "0o22 or 022 octal" in result.stderr


def test_gunicorn_command_line_flags(tmp_path):
    """The short flags and the gunicorn-only ones: -p, -m, -v, -D (refused
    with the way to run ferrule instead), --worker-tmp-dir (not needed),
    the start banner, and --log-level debug's configuration."""
    (tmp_path / "app.py").write_text(APP)
    pid = tmp_path / "app.pid"
    sock = tmp_path / "app.sock"
    server = Server("app", "-p", str(pid), "-m", "007", "-w", "2", "--threads", "3", "--worker-tmp-dir",
                    "/dev/shm", "--log-level", "debug", bind=[f"unix:{sock}"], cwd=tmp_path)
    try:
        worker_pids(server, 2)
        assert pid.read_text().strip() == str(server.proc.pid)
        assert sock.stat().st_mode & 0o777 == 0o770
        log = server.log
        assert log.index("Starting ferrule ") < log.index("Listening at: ")
        assert "Using worker: gthread (3 threads per worker, 2 workers)" in log
        assert "--worker-tmp-dir is not needed" in log
        assert "Current configuration:\n" in log and "\n  workers: 2\n" in log
    finally:
        server.kill()
    version = run_ferrule("-v", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("ferrule ")
    daemon = run_ferrule("app", "-D", cwd=tmp_path)
    assert daemon.returncode == 2 and "ferrule does not detach itself" in daemon.stderr
    (tmp_path / "gunicorn.conf.py").write_text("daemon = True\n")
    assert run_ferrule("app", cwd=tmp_path).returncode == 2


def test_capture_output_sends_print_to_the_error_log(tmp_path):
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        import sys

        def application(environ, start_response):
            print("printed by the application", flush=True)
            sys.stderr.write("written to stderr\\n")
            start_response("200 OK", [])
            return [b"ok"]
    '''))
    error_log = tmp_path / "error.log"
    server = Server("app", "--capture-output", "--error-logfile", str(error_log), cwd=tmp_path,
                    expect_ready=False)
    try:
        wait_until(lambda: error_log.exists() and "Listening at: " in error_log.read_text(), what="start")
        url = error_log.read_text().split("Listening at: ")[1].split()[0]
        assert httpx.get(url).text == "ok"
        wait_until(lambda: "written to stderr" in error_log.read_text(), what="the app's output")
        assert "printed by the application" in error_log.read_text()
        assert server.stdout == ""
    finally:
        server.kill()


def test_no_sendfile(tmp_path):
    """--no-sendfile (or sendfile = False in a config file): a file_wrapper
    response is read and sent, with no sendfile(2) call."""
    data = tmp_path / "data.bin"
    data.write_bytes(bytes(range(256)) * 4096)
    (tmp_path / "gunicorn.conf.py").write_text("sendfile = False\n")
    result = run_ferrule("behaviours", "--chdir", str(APPS), "--print-config", cwd=tmp_path)
    assert "no_sendfile = true  (gunicorn.conf.py)" in result.stdout.splitlines()
    for args, expect_sendfile in ((["--no-sendfile"], False), ([], True)):
        trace = tmp_path / f"trace{len(args)}"
        server = Server("behaviours", *args, "--chdir", str(APPS), cwd=APPS, expect_ready=False,
                        wrapper=["strace", "-f", "-qq", "-e", "trace=sendfile", "-o", str(trace)])
        try:
            server.wait_for(lambda: server.urls, what="listening")
            body = httpx.get(server.url + f"/file?path={data}").content
            assert body == data.read_bytes()
        finally:
            # The master is strace's child: stopped by its pid, strace ends with it.
            for master in children(server.proc.pid):
                os.kill(master, signal.SIGTERM)
            assert server.proc.wait(20) == 0
        assert ("sendfile(" in trace.read_text()) is expect_sendfile
