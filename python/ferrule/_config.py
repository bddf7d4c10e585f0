"""Reading a gunicorn-style Python config file (``-c FILE``, ``python:module``,
or ``./ferrule.conf.py`` / ``./gunicorn.conf.py``). The file is Python, so
it is run here; which of its names are settings, and what they mean, is
decided in Rust from the one declaration of the settings (src/config.rs)."""

import importlib
import inspect
import os
import runpy
import shlex


def load(path):
    """Runs the config file at `path` (or imports ``python:module``) and
    returns (settings, hooks): each module-level public name with a plain
    value as (name, kind, values), kind "bool", "list" or "scalar" and the
    values as strings; and the names of its functions (gunicorn's hooks).
    ``raw_env`` ("KEY=VALUE" strings) is applied to os.environ here, before
    any worker is forked, as gunicorn does."""
    if path.startswith("python:"):
        namespace = vars(importlib.import_module(path[len("python:"):]))
    else:
        namespace = runpy.run_path(path)
    settings, hooks = [], []
    for name, value in namespace.items():
        if name.startswith("_") or inspect.ismodule(value) or inspect.isclass(value):
            continue
        if callable(value):
            hooks.append(name)
            continue
        if name == "raw_env":
            for item in [value] if isinstance(value, str) else value:
                key, _, val = str(item).partition("=")
                os.environ[key] = val
            continue
        if isinstance(value, bool):
            settings.append((name, "bool", ["true" if value else "false"]))
        elif isinstance(value, (list, tuple, set)):
            settings.append((name, "list", [str(v) for v in value]))
        elif value is None:
            continue
        else:
            settings.append((name, "scalar", [str(value)]))
    return settings, hooks


def split_args(text):
    """GUNICORN_CMD_ARGS / FERRULE_CMD_ARGS, split as a shell would."""
    return shlex.split(text)
