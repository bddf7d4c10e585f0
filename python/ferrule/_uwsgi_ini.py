"""Reading a uWSGI ini file (``--ini FILE`` or ``--ini FILE:SECTION``, the
``[uwsgi]`` section by default) into ferrule's flags.

The file is read as uWSGI reads it: ``key = value`` lines, a key given
again adds a value, ``#`` and ``;`` start comments, and values may use
uWSGI's magic variables (``%d`` the file's directory with a trailing slash,
``%p`` its path, ``%s`` its name, ``%n`` its name without extension, ``%c``
its directory's name, ``%%``), ``%(option)`` for another option's value and
``$(NAME)`` for an environment variable. Each option Python deployments use
becomes a flag; an option ferrule has no use for because it already behaves
so gets an info line, and any other a warning: none is dropped silently.
"""

import os
import re
import sys

# uWSGI options that need no flag: ferrule behaves so already.
ALREADY = {
    "master": "ferrule always runs a master",
    "vacuum": "ferrule removes its socket and pid files on exit",
    "die-on-term": "SIGTERM stops ferrule gracefully",
    "enable-threads": "Python threads always work in ferrule",
    "single-interpreter": "ferrule runs one interpreter per process",
    "need-app": "ferrule stops when the application cannot be loaded",
    "strict": "ferrule refuses settings it does not know on its command line",
    "thunder-lock": "workers accept without a thundering herd",
    "no-orphans": "workers stop when the master dies",
    "harakiri-verbose": "a timed-out worker's Python stacks are always logged",
    "plugin": "the Python plugin is ferrule itself",
    "plugins": "the Python plugin is ferrule itself",
    "auto-procname": "processes are titled 'ferrule: worker [APP]' with setproctitle",
    "procname-prefix": "processes are titled 'ferrule: worker [APP]' with setproctitle",
    "procname-prefix-spaced": "processes are titled 'ferrule: worker [APP]' with setproctitle",
    "memory-report": "see --max-worker-memory",
    "lazy-apps": "each worker imports the application, ferrule's default (without it: --preload)",
    "lazy": "each worker imports the application, ferrule's default (without it: --preload)",
    "wsgi-env-behaviour": "ferrule's environ follows PEP 3333",
    "offload-threads": "ferrule sends files with sendfile(2) from its event loop",
    "manage-script-name": "SCRIPT_NAME from a gateway is taken off PATH_INFO",
}

# uWSGI option -> (ferrule flag, how the value is turned into the flag's).
SIMPLE = {
    "chdir": "--chdir",
    "processes": "--workers",
    "workers": "--workers",
    "threads": "--threads",
    "harakiri": "--timeout",
    "max-requests": "--max-requests",
    "reload-on-rss": "--max-worker-memory",
    "buffer-size": "--buffer-size",
    "post-buffering": "--post-buffering",
    "limit-post": "--limit-request-body",
    "uid": "--user",
    "gid": "--group",
    "pidfile": "--pid",
    "pidfile2": "--pid",
    "listen": "--backlog",
    "socket-timeout": "--socket-timeout",
    "http-timeout": "--socket-timeout",
    "max-requests-delta": "--max-requests-jitter",
}

REPEATED = {
    "pythonpath": "--pythonpath",
    "python-path": "--pythonpath",
    "pp": "--pythonpath",
    "env": "--env",
    "mount": "--mount",
}

# Listening options and the protocol each one's address is served in.
SOCKETS = {
    "socket": "uwsgi",
    "uwsgi-socket": "uwsgi",
    "http-socket": "http",
    "http": "http",
    "fastcgi-socket": "fastcgi",
    "scgi-socket": "scgi",
}

NOT_YET = {
    "touch-reload": "send SIGHUP to the master to reload the code (systemctl reload)",
    "daemonize": "ferrule does not daemonize itself: run it under systemd, supervisord or docker",
    "stats": "ferrule has no stats server",
    "cheaper": "ferrule runs a fixed number of workers: set --workers (SIGTTIN/SIGTTOU change it)",
    "max-worker-lifetime": "use --max-requests with --max-requests-jitter",
}


class IniError(Exception):
    """An ini file ferrule cannot read, with the reason."""


def _parse(path, section):
    """[(key, value)] of `section` in the file at `path`, in order."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as exc:
        raise IniError(f"--ini {path}: {exc.strerror}") from None
    options, current, seen = [], None, set()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
            seen.add(current)
            continue
        if current != section:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            # A bare option is a true switch, as in uWSGI.
            key, value = line, "true"
        options.append((key.strip().replace("_", "-"), value.strip(), number))
    if section not in seen:
        raise IniError(f"--ini {path}: no [{section}] section")
    return options


def _expand(value, path, options, env):
    """uWSGI's magic variables, option references and environment."""
    real = os.path.abspath(path)
    directory = os.path.dirname(real)
    magic = {
        "d": directory + "/",
        "p": real,
        "s": os.path.basename(real),
        "n": os.path.splitext(os.path.basename(real))[0],
        "c": os.path.basename(directory),
        "%": "%",
    }

    def option(match):
        name = match.group(1)
        values = [v for k, v, _ in options if k == name]
        return values[-1] if values else ""

    value = re.sub(r"\$\(([^)]+)\)", lambda m: env.get(m.group(1), ""), value)
    value = re.sub(r"%\(([^)]+)\)", option, value)
    return re.sub(r"%([dpsnc%])", lambda m: magic[m.group(1)], value)


def _truthy(value):
    return value.lower() in ("true", "1", "yes", "on", "y", "t")


def _address(value):
    """A uWSGI socket address as ferrule's: `:3031` is every interface,
    a path is a unix socket."""
    if value.startswith(":"):
        return "0.0.0.0" + value
    if "/" in value or (":" not in value and value.endswith(".sock")):
        return "unix:" + value
    return value


def load(spec, env=None):
    """Reads `spec` (FILE or FILE:SECTION) and returns (words, info,
    warnings): the flags the file stands for, and what to log."""
    env = os.environ if env is None else env
    path, section = spec, "uwsgi"
    if ":" in spec and not os.path.exists(spec):
        path, _, section = spec.rpartition(":")
    raw = _parse(path, section)
    options = [(k, _expand(v, path, raw, env), n) for k, v, n in raw]
    words, info, warnings = [], [], []
    where = f"{path} [{section}]"
    values = {}
    for key, value, _ in options:
        values.setdefault(key, []).append(value)

    # The application: module (or wsgi, wsgi-file, file) and callable.
    callable_name = (values.get("callable") or [None])[-1]
    app = None
    for key in ("module", "wsgi", "wsgi-file", "file", "mount-app"):
        if key in values:
            app = values[key][-1]
            break
    if app is not None:
        if callable_name and ":" not in app:
            app = f"{app}:{callable_name}"
        words += ["--wsgi-app", app]

    # virtualenv: ferrule runs in the interpreter it was started with.
    for key in ("virtualenv", "venv", "home", "pyhome"):
        for venv in values.get(key, []):
            if os.path.realpath(venv) != os.path.realpath(sys.prefix):
                raise IniError(
                    f"{where}: {key} = {venv} is not the environment ferrule runs in "
                    f"({sys.prefix}); start the ferrule installed in {venv} "
                    f"({os.path.join(venv, 'bin', 'ferrule')}) instead"
                )

    # uWSGI imports the application in the master unless lazy-apps is set.
    lazy = any(_truthy(v) for k in ("lazy-apps", "lazy") for v in values.get(k, []))
    if not lazy and (app is not None or "mount" in values):
        words.append("--preload=true")
        info.append(f"{where}: the application is imported in the master before forking "
                    f"(uWSGI's default without lazy-apps): --preload")

    # Request logging: uWSGI logs requests unless disable-logging.
    logto = None
    for key in ("logto", "logto2"):
        if key in values:
            logto = values[key][-1]
            words += ["--error-logfile", logto]
    quiet = any(_truthy(v) for v in values.get("disable-logging", []))
    if not quiet:
        words += ["--access-logfile", logto or "-"]

    handled = {"module", "wsgi", "wsgi-file", "file", "mount-app", "callable", "virtualenv", "venv",
               "home", "pyhome", "logto", "logto2", "disable-logging"}
    for key, value, number in options:
        if key in handled:
            continue
        if key in SIMPLE:
            words += [SIMPLE[key], value]
        elif key in REPEATED:
            words += [REPEATED[key], value]
        elif key in SOCKETS:
            words += ["--bind", f"{SOCKETS[key]}://{_address(value)}"]
            if key == "http":
                info.append(f"{where}: http = {value}: ferrule serves HTTP itself, "
                            "with no separate router process")
        elif key == "static-map":
            words += ["--static", value]
        elif key == "static-map2":
            # The prefix stays part of the file's path under the directory.
            prefix, _, directory = value.partition("=")
            words += ["--static", f"{prefix}={os.path.join(directory, prefix.strip('/'))}"]
        elif key == "check-static":
            words += ["--static", f"/={value}"]
        elif key == "chmod-socket":
            # Bare, uWSGI means 666.
            words += ["--chmod-socket", value if value != "true" else "666"]
        elif key == "py-autoreload" or key == "python-autoreload":
            if value not in ("0", "false"):
                words.append("--reload=true")
        elif key in ALREADY:
            info.append(f"{where}: {key} needs no setting: {ALREADY[key]}")
        elif key in NOT_YET or key.startswith(("static-", "route", "hook-", "cheaper")):
            why = NOT_YET.get(key) or NOT_YET.get(key.split("-")[0]) or "ferrule has no equivalent"
            warnings.append(f"{where}: line {number}: {key} was ignored: {why}")
        else:
            warnings.append(f"{where}: line {number}: '{key}' is not an option ferrule maps and "
                            "was ignored (docs/migrating.md lists the ones it does)")
    return words, info, warnings
