"""gunicorn's server hooks, from a gunicorn.conf.py run unchanged: each is
called at its moment, in the right process, with objects that carry what
real hooks read (pids, ages, settings, the request and its status)."""

import json
import os
import signal
import textwrap

import httpx
import pytest

from conftest import Server, run_ferrule, wait_until, worker_pids

APP = textwrap.dedent('''
    import time

    def application(environ, start_response):
        if environ["PATH_INFO"] == "/hang":
            time.sleep(60)
        start_response("201 Created", [("Content-Type", "text/plain")])
        return [b"made"]
''')

# Every hook gunicorn documents, written as gunicorn's docs write them.
CONFIG = textwrap.dedent('''
    import json
    import os

    workers = 2
    bind = "127.0.0.1:0"

    def _record(event, **fields):
        with open(os.environ["HOOKS_LOG"], "a") as f:
            f.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\\n")

    def on_starting(server):
        _record("on_starting", server_pid=server.pid, workers=server.cfg.workers, bind=server.cfg.bind,
                keepalive=server.cfg.keepalive)

    def nworkers_changed(server, new_value, old_value):
        _record("nworkers_changed", new=new_value, old=old_value)

    def when_ready(server):
        server.log.info("Server is ready. Spawning workers")
        _record("when_ready")

    def pre_fork(server, worker):
        _record("pre_fork", age=worker.age, worker_pid=worker.pid)

    def post_fork(server, worker):
        server.log.info("Worker spawned (pid: %s)", worker.pid)
        _record("post_fork", worker_pid=worker.pid, ppid=worker.ppid, age=worker.age)

    def post_worker_init(worker):
        _record("post_worker_init", worker_pid=worker.pid)

    def pre_request(worker, req):
        worker.log.debug("%s %s", req.method, req.path)
        _record("pre_request", worker_pid=worker.pid, method=req.method, path=req.path,
                query=req.query, trace=dict(req.headers).get("X-TRACE"))

    def post_request(worker, req, environ, resp):
        _record("post_request", worker_pid=worker.pid, path=req.path, status=resp.status,
                code=resp.status_code, sent=resp.sent, path_info=environ["PATH_INFO"])

    def worker_int(worker):
        _record("worker_int", worker_pid=worker.pid)

    def worker_abort(worker):
        _record("worker_abort", worker_pid=worker.pid)

    def worker_exit(server, worker):
        _record("worker_exit", worker_pid=worker.pid)

    def child_exit(server, worker):
        _record("child_exit", worker_pid=worker.pid)

    def on_reload(server):
        _record("on_reload")

    def on_exit(server):
        _record("on_exit", server_pid=server.pid)
''')


def events(log_path, name=None):
    if not log_path.exists():
        return []
    found = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [e for e in found if name is None or e["event"] == name]


def start(tmp_path, *args, config=CONFIG):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(config)
    log = tmp_path / "hooks.log"
    server = Server("app", *args, bind=[], cwd=tmp_path, env={"HOOKS_LOG": str(log)})
    return server, log


def test_every_hook_at_its_moment(tmp_path):
    server, log = start(tmp_path)
    master = server.proc.pid
    try:
        pids = worker_pids(server, 2)
        wait_until(lambda: len(events(log, "post_worker_init")) == 2, what="two workers initialised")
        first = events(log)
        assert first[0] == {"event": "nworkers_changed", "pid": master, "new": 2, "old": None}
        assert first[1]["event"] == "on_starting"
        assert first[1]["pid"] == master and first[1]["server_pid"] == master
        assert first[1]["workers"] == 2 and first[1]["bind"] == ["127.0.0.1:0"]
        assert first[1]["keepalive"] == 5  # gunicorn's name for keep_alive
        assert first[2]["event"] == "when_ready"
        forks = events(log, "pre_fork")
        assert [(e["pid"], e["age"], e["worker_pid"]) for e in forks] == [(master, 1, None), (master, 2, None)]
        post = events(log, "post_fork")
        assert sorted(e["pid"] for e in post) == pids
        assert all(e["worker_pid"] == e["pid"] and e["ppid"] == master for e in post)
        assert sorted(e["age"] for e in post) == [1, 2]
        assert sorted(e["pid"] for e in events(log, "post_worker_init")) == pids
        assert "Server is ready. Spawning workers" in server.log
        assert "Worker spawned (pid: " in server.log

        resp = httpx.get(server.url + "/some/where?x=1", headers={"X-Trace": "abc"})
        assert resp.status_code == 201
        wait_until(lambda: events(log, "post_request"), what="post_request")
        [pre] = events(log, "pre_request")
        assert pre["pid"] in pids and pre["worker_pid"] == pre["pid"]
        assert (pre["method"], pre["path"], pre["query"], pre["trace"]) == ("GET", "/some/where", "x=1", "abc")
        [post] = events(log, "post_request")
        assert post["pid"] == pre["pid"]
        assert (post["path"], post["status"], post["code"], post["sent"]) == ("/some/where", "201 Created", 201, 4)
        assert post["path_info"] == "/some/where"

        server.send_signal(signal.SIGTTIN)
        wait_until(lambda: events(log, "nworkers_changed")[1:], what="nworkers_changed on TTIN")
        assert events(log, "nworkers_changed")[1] == {"event": "nworkers_changed", "pid": master, "new": 3, "old": 2}
        third = worker_pids(server, 3)

        server.send_signal(signal.SIGHUP)
        wait_until(lambda: len(events(log, "child_exit")) == 3, what="the old workers' child_exit")
        assert [e["pid"] for e in events(log, "on_reload")] == [master]
        exits = events(log, "child_exit")
        assert all(e["pid"] == master for e in exits)
        assert sorted(e["worker_pid"] for e in exits) == third
        assert sorted(e["pid"] for e in events(log, "worker_exit")) == third
        new_pids = worker_pids(server, 3)
    finally:
        assert server.stop() == 0

    assert {e["pid"] for e in events(log, "worker_exit")} == set(third) | set(new_pids)
    last = events(log)[-1]
    assert last == {"event": "on_exit", "pid": master, "server_pid": master}
    assert "Hook" not in server.log, server.log


def test_worker_abort_on_timeout_and_worker_int_on_quit(tmp_path):
    server, log = start(tmp_path, "-w", "1", "--timeout", "1")
    try:
        [pid] = worker_pids(server, 1)
        with pytest.raises(httpx.HTTPError):
            httpx.get(server.url + "/hang", timeout=20)
        wait_until(lambda: events(log, "worker_abort"), what="worker_abort")
        assert events(log, "worker_abort") == [{"event": "worker_abort", "pid": pid, "worker_pid": pid}]
        server.wait_for_log(f"(pid: {pid}) was killed by SIGKILL; replaced: timeout")
        [fresh] = worker_pids(server, 1)
        wait_until(lambda: len(events(log, "post_worker_init")) == 2, what="the new worker")
    finally:
        server.stop(signal.SIGQUIT)
    assert [e["pid"] for e in events(log, "worker_int")] == [fresh]


def test_older_ferrule_hook_forms_still_work(tmp_path):
    config = textwrap.dedent('''
        import os
        workers = 2
        def _record(line):
            with open(os.environ["HOOKS_LOG"], "a") as f:
                f.write(line + "\\n")
        def on_starting():
            _record("on_starting")
        def post_fork(worker_id):
            _record(f"post_fork {worker_id}")
    ''')
    server, log = start(tmp_path, config=config)
    try:
        worker_pids(server, 2)
        wait_until(lambda: log.exists() and log.read_text().count("post_fork") == 2, what="post_fork twice")
        assert sorted(log.read_text().splitlines()) == ["on_starting", "post_fork 1", "post_fork 2"]
    finally:
        server.kill()


def test_a_hook_that_raises_is_logged_and_changes_nothing_else(tmp_path):
    config = textwrap.dedent('''
        def pre_request(worker, req):
            raise RuntimeError("pre_request broke")
        def post_request(worker, req, environ, resp):
            raise RuntimeError("post_request broke")
    ''')
    server, _ = start(tmp_path, config=config)
    try:
        assert httpx.get(server.url + "/").status_code == 201
        server.wait_for_log("RuntimeError: post_request broke")
        assert "RuntimeError: pre_request broke" in server.log
        assert "Hook pre_request failed" in server.log
        assert httpx.get(server.url + "/").status_code == 201
    finally:
        server.kill()


@pytest.mark.parametrize("source, message", [
    ("def post_fork(a, b, c):\n    pass\n",
     "hook post_fork takes 3 arguments; expected post_fork(server, worker) or post_fork(worker_id)"),
    ("def pre_request():\n    pass\n", "hook pre_request takes 0 arguments; expected pre_request(worker, req)"),
])
def test_a_hook_with_the_wrong_signature_is_refused_at_start(tmp_path, source, message):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "gunicorn.conf.py").write_text(source)
    result = run_ferrule("app", "-b", "127.0.0.1:0", cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Booting worker" not in result.stderr
    checked = run_ferrule("app", "--check-config", cwd=tmp_path)
    assert checked.returncode == 1 and message in checked.stderr


def test_hooks_module_flag_with_gunicorn_signatures(tmp_path):
    (tmp_path / "myhooks.py").write_text(textwrap.dedent('''
        import os
        def post_fork(server, worker):
            with open(os.environ["HOOKS_LOG"], "a") as f:
                f.write(f"post_fork {worker.pid} {server.pid}\\n")
    '''))
    (tmp_path / "app.py").write_text(APP)
    log = tmp_path / "hooks.log"
    server = Server("app", "--hooks", "myhooks", "--chdir", str(tmp_path), cwd=tmp_path,
                    env={"HOOKS_LOG": str(log)})
    try:
        [pid] = worker_pids(server, 1)
        wait_until(lambda: log.exists() and log.read_text(), what="post_fork")
        assert log.read_text() == f"post_fork {pid} {server.proc.pid}\n"
    finally:
        server.kill()


def test_post_request_runs_on_the_applications_thread(tmp_path):
    """With several threads, post_request runs on the thread that ran the
    application (and pre_request), as gunicorn's gthread does: a hook's
    threading.local and context variables are the request's own."""
    import concurrent.futures
    import threading

    config = textwrap.dedent('''
        import os
        import threading

        def pre_request(worker, req):
            req.thread = threading.get_ident()

        def post_request(worker, req, environ, resp):
            with open(os.environ["HOOKS_LOG"], "a") as f:
                f.write(f"{req.thread == threading.get_ident()}\\n")
    ''')
    (tmp_path / "app.py").write_text(textwrap.dedent('''
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"x" * (4 << 20)]
    '''))
    (tmp_path / "gunicorn.conf.py").write_text(config)
    log = tmp_path / "hooks.log"
    server = Server("app", "--threads", "4", bind=["127.0.0.1:0"], cwd=tmp_path, env={"HOOKS_LOG": str(log)})
    try:
        def fetch(_):
            with httpx.stream("GET", server.url, timeout=30) as resp:
                return sum(len(chunk) for chunk in resp.iter_bytes(65536))

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(fetch, range(32))) == {4 << 20}
        wait_until(lambda: log.exists() and len(log.read_text().split()) == 32, what="32 post_request calls")
        assert set(log.read_text().split()) == {"True"}
    finally:
        server.kill()
