"""Reading a gunicorn-style Python config file (``-c FILE``, ``python:module``,
or ``./ferrule.conf.py`` / ``./gunicorn.conf.py``). The file is Python, so
it is run here; which of its names are settings, and what they mean, is
decided in Rust from the one declaration of the settings (src/config.rs)."""

import importlib
import inspect
import os
import runpy
import shlex
import sys


# The file's functions named as gunicorn's hooks, for ferrule._hooks.
file_hooks = {}


def load(path):
    """Runs the config file at `path` (or imports ``python:module``) and
    returns (settings, hooks, unsupported): each module-level public name
    with a plain value as (name, kind, values), kind "bool", "list" or
    "scalar" and the values as strings; the names of its functions that are
    gunicorn's hooks (kept in `file_hooks`); and (name, why) for functions
    that are gunicorn settings ferrule does not use. Other functions (helpers,
    imports such as ``cpu_count``) are not settings, as in gunicorn.
    ``raw_env`` ("KEY=VALUE" strings) is applied to os.environ here, before
    any worker is forked, as gunicorn does."""
    from ferrule import _hooks

    if path.startswith("python:"):
        # As gunicorn: a module in the working directory is found.
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        namespace = vars(importlib.import_module(path[len("python:"):]))
    else:
        # gunicorn also accepts file:PATH.
        namespace = runpy.run_path(path[len("file:"):] if path.startswith("file:") else path)
    settings, unsupported = [], []
    file_hooks.clear()
    for name, value in namespace.items():
        if name.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
            continue
        if callable(value):
            if name in _hooks.SIGNATURES:
                file_hooks[name] = value
            elif name in _hooks.UNSUPPORTED:
                unsupported.append((name, _hooks.UNSUPPORTED[name]))
            continue
        if name == "raw_env":
            for item in [value] if isinstance(value, str) else value:
                key, _, val = str(item).partition("=")
                os.environ[key] = val
            continue
        if isinstance(value, dict):
            # secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}; {} for none.
            pairs = [f"{k}={v}" for k, v in value.items()]
            settings.append((name, "list", pairs or ["none"]))
        elif isinstance(value, bool):
            settings.append((name, "bool", ["true" if value else "false"]))
        elif isinstance(value, (list, tuple, set)):
            settings.append((name, "list", [str(v) for v in value]))
        elif value is None:
            continue
        elif isinstance(value, int):
            # int(), for an IntEnum such as ssl.CERT_REQUIRED, which str()
            # names as "VerifyMode.CERT_REQUIRED" before Python 3.11.
            settings.append((name, "scalar", [str(int(value))]))
        else:
            settings.append((name, "scalar", [str(value)]))
    return settings, sorted(file_hooks), unsupported


def split_args(text):
    """GUNICORN_CMD_ARGS / FERRULE_CMD_ARGS, split as a shell would."""
    return shlex.split(text)
