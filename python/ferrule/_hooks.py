"""Server hooks with gunicorn's names, signatures and moments.

The hooks come from the config file (module-level functions named as
gunicorn's hooks) and from the module given to ``--hooks``, which wins where
both define one. Each is checked against gunicorn's signature when the
server starts. The older ferrule forms, without the server argument
(``on_starting()``, ``post_fork(worker_id)``, ``worker_exit(worker_id)``,
``on_exit()``), are still called, with the worker's number.

The objects passed carry what gunicorn's do and real hooks use:
``server.pid``, ``server.cfg``, ``server.log``, ``server.num_workers``,
``server.WORKERS``; ``worker.pid``, ``worker.ppid``, ``worker.age``,
``worker.id``, ``worker.log``, ``worker.cfg``; ``req.method``, ``req.path``,
``req.query``, ``req.uri``, ``req.version``, ``req.headers``; ``resp.status``,
``resp.status_code``, ``resp.sent``.

An exception in a hook is written to the error log with its traceback and
changes nothing else: the server, or the request, goes on.
"""

import http
import inspect
import os
import traceback

from ferrule import _ferrule

# gunicorn's hooks: their parameters, and the older ferrule form's
# parameter count where there is one.
SIGNATURES = {
    "on_starting": (("server",), 0),
    "on_reload": (("server",), None),
    "when_ready": (("server",), None),
    "pre_fork": (("server", "worker"), None),
    "post_fork": (("server", "worker"), 1),
    "post_worker_init": (("worker",), None),
    "worker_int": (("worker",), None),
    "worker_abort": (("worker",), None),
    "pre_exec": (("server",), None),
    "pre_request": (("worker", "req"), None),
    "post_request": (("worker", "req", "environ", "resp"), None),
    "child_exit": (("server", "worker"), None),
    "worker_exit": (("server", "worker"), 1),
    "nworkers_changed": (("server", "new_value", "old_value"), None),
    "on_exit": (("server",), 0),
}

# gunicorn settings whose value is a function but which ferrule has no use
# for, with what to do instead.
UNSUPPORTED = {
    "ssl_context": "ferrule's TLS is rustls, not Python's ssl module: use certfile, keyfile, ca_certs, cert_reqs and ssl_protocol_min",
}


class HookError(Exception):
    """A hook that cannot be called as gunicorn would call it."""


class Log:
    """The error log, with the methods gunicorn's ``server.log`` and
    ``worker.log`` have; ``msg % args`` as in the logging module."""

    def _write(self, level, msg, args):
        text = str(msg) % args if args else str(msg)
        _ferrule.log(level, text)

    def debug(self, msg, *args, **_):
        self._write("debug", msg, args)

    def info(self, msg, *args, **_):
        self._write("info", msg, args)

    def warning(self, msg, *args, **_):
        self._write("warning", msg, args)

    warn = warning

    def error(self, msg, *args, **_):
        self._write("error", msg, args)

    def critical(self, msg, *args, **_):
        self._write("critical", msg, args)

    def exception(self, msg, *args, **_):
        self._write("error", f"{str(msg) % args if args else msg}\n{traceback.format_exc()}", ())


class Settings:
    """``server.cfg``: every setting's effective value as an attribute,
    under its config file name (``cfg.workers``, ``cfg.bind``...)."""

    def __init__(self, values):
        self.__dict__.update(values)

    def __repr__(self):
        return f"<ferrule settings {sorted(self.__dict__)}>"


class Server:
    """The master, as gunicorn's hooks receive it (its Arbiter)."""

    def __init__(self, cfg, log):
        self.pid = os.getpid()
        self.cfg = cfg
        self.log = log
        self.num_workers = cfg.__dict__.get("workers", 1)
        # pid -> Worker, for the workers alive now (gunicorn's WORKERS).
        self.WORKERS = {}
        self.proc_name = "ferrule"


class Worker:
    """A worker, as gunicorn's hooks receive it. ``pid`` is None until it
    is forked (in pre_fork); ``age`` counts the workers started, as in
    gunicorn, and ``id`` is the worker's number in ferrule's log."""

    def __init__(self, number, server):
        self.id = number
        self.age = number
        self.pid = None
        self.ppid = server.pid
        self.cfg = server.cfg
        self.log = server.log
        self.alive = True
        self.booted = False

    def __repr__(self):
        return f"<Worker {self.pid}>"


class Request:
    """``req`` in pre_request and post_request, read from the environ."""

    def __init__(self, environ):
        self._environ = environ
        self.method = environ.get("REQUEST_METHOD", "")
        self.uri = environ.get("RAW_URI") or environ.get("REQUEST_URI", "")
        self.path = self.uri.split("?", 1)[0] or (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
        self.query = environ.get("QUERY_STRING", "")
        self.scheme = environ.get("wsgi.url_scheme", "http")
        self.remote_addr = environ.get("REMOTE_ADDR", "")
        protocol = environ.get("SERVER_PROTOCOL", "HTTP/1.1")
        try:
            major, _, minor = protocol.partition("/")[2].partition(".")
            self.version = (int(major), int(minor or 0))
        except ValueError:
            self.version = (1, 1)

    @property
    def headers(self):
        """(NAME, value) pairs, names upper-case as gunicorn gives them."""
        pairs = []
        for key, value in self._environ.items():
            if key.startswith("HTTP_"):
                pairs.append((key[5:].replace("_", "-"), value))
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
                pairs.append((key.replace("_", "-"), value))
        return pairs

    def __repr__(self):
        return f"<Request {self.method} {self.uri}>"


class Response:
    """``resp`` in post_request: the status sent and the body bytes."""

    def __init__(self, status_code, status_line, sent):
        self.status_code = status_code
        if status_line is None:
            # The server's own response (a 500 for a failed application).
            try:
                status_line = f"{status_code} {http.HTTPStatus(status_code).phrase}"
            except ValueError:
                status_line = str(status_code)
        self.status = status_line
        self.sent = sent
        self.response_length = sent


def _arity(name, func):
    """How many positional arguments `func` takes as the hook `name`: the
    gunicorn count, or the older ferrule form's. Raises HookError."""
    params, older = SIGNATURES[name]
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return len(params)
    positional = [
        p for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return len(params)
    required = [p for p in positional if p.default is p.empty]
    accepted = {len(params)}
    if older is not None:
        accepted.add(older)
    if name == "post_request":
        # gunicorn also calls post_request(worker, req[, environ]).
        accepted |= {2, 3}
    for count in sorted(accepted, reverse=True):
        if len(required) <= count <= len(positional):
            return count
    expected = f"{name}({', '.join(params)})"
    if older is not None:
        expected += f" or {name}({'worker_id' if older else ''})"
    raise HookError(f"hook {name} takes {len(positional)} arguments; expected {expected}")


class Hooks:
    """The hooks defined, and the moments they are called at."""

    def __init__(self, functions, settings):
        self.log = Log()
        self.server = Server(Settings(settings), self.log)
        self.worker = None
        self._forking = None
        self._calls = {}
        for name, func in functions.items():
            self._calls[name] = (func, _arity(name, func))

    def has(self, name):
        return name in self._calls

    def names(self):
        return sorted(self._calls)

    def _call(self, name, *args):
        """Calls hook `name` with gunicorn's arguments `args`, or, for the
        older form, the arguments that form takes."""
        entry = self._calls.get(name)
        if entry is None:
            return None
        func, count = entry
        full = len(SIGNATURES[name][0])
        if count != full and name != "post_request":
            older = SIGNATURES[name][1]
            args = (self.worker.id,) if older == 1 and self.worker else ()
        else:
            args = args[:count]
        try:
            return func(*args)
        except Exception:  # noqa: BLE001 - a hook's failure is logged, not fatal
            self.log.error(f"Hook {name} failed\n{traceback.format_exc()}")
            return None

    # In the master.
    def on_starting(self):
        self._call("on_starting", self.server)

    def when_ready(self):
        self._call("when_ready", self.server)

    def on_reload(self):
        self._call("on_reload", self.server)

    def nworkers_changed(self, new, old):
        self.server.num_workers = new
        self._call("nworkers_changed", self.server, new, old)

    def pre_fork(self, number):
        self._forking = Worker(number, self.server)
        self._call("pre_fork", self.server, self._forking)

    def forked(self, pid):
        """In the master, after the fork: the new worker's pid."""
        worker = self._forking
        self._forking = None
        if worker is not None:
            worker.pid = pid
            self.server.WORKERS[pid] = worker

    def child_exit(self, pid):
        worker = self.server.WORKERS.pop(pid, None)
        if worker is not None:
            worker.alive = False
            self._call("child_exit", self.server, worker)

    def on_exit(self):
        self._call("on_exit", self.server)

    def pre_exec(self):
        """In the child that becomes the new master on USR2, before exec."""
        self._call("pre_exec", self.server)

    # In a worker.
    def post_fork(self):
        self.worker = self._forking
        self._forking = None
        self.worker.pid = os.getpid()
        self.server.WORKERS.clear()
        self._call("post_fork", self.server, self.worker)

    def post_worker_init(self):
        self.worker.booted = True
        self._call("post_worker_init", self.worker)

    def worker_int(self):
        self._call("worker_int", self.worker)

    def worker_abort(self):
        self._call("worker_abort", self.worker)

    def worker_exit(self):
        self.worker.alive = False
        self._call("worker_exit", self.server, self.worker)

    def pre_request(self, environ):
        req = Request(environ)
        self._call("pre_request", self.worker, req)
        return req

    def post_request(self, req, environ, status_code, status_line, sent):
        self._call("post_request", self.worker, req, environ, Response(status_code, status_line, sent))


def load(module_spec, settings):
    """The hooks of the config file read (``ferrule._config``) and of the
    ``--hooks`` module `module_spec`, or None when none is defined.
    `settings` is [(name, values, many)]: each setting's effective value
    as strings. Raises HookError for a hook gunicorn could not call."""
    from ferrule import _config

    functions = dict(_config.file_hooks)
    if module_spec:
        module = __import__(module_spec, fromlist=["_"])
        for name in SIGNATURES:
            func = getattr(module, name, None)
            if callable(func):
                functions[name] = func
    if not functions:
        return None
    return Hooks(functions, {name: _value(values, many) for name, values, many in settings})


def _value(values, many):
    """A setting's strings as the Python value a hook expects."""
    converted = [_scalar(v) for v in values]
    if many:
        return converted
    return converted[0] if converted else None


def _scalar(text):
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
