"""An app whose import builds ~60 MB of Python objects: shared between
workers with --preload, copied into each without it."""

import os

DATA = [str(i) * 20 for i in range(600_000)]


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{os.getpid()} {len(DATA)}".encode()]
