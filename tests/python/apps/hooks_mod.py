"""Hooks that record the moments they are called at into HOOKS_LOG."""

import os


def _record(line):
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(line + "\n")


def on_starting():
    _record(f"on_starting {os.getpid()}")


def post_fork(worker_id):
    _record(f"post_fork {worker_id} {os.getpid()}")


def worker_exit(worker_id):
    _record(f"worker_exit {worker_id} {os.getpid()}")


def on_exit():
    _record(f"on_exit {os.getpid()}")
