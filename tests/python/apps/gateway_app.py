"""One application answered the same through every front end: it reports
its environ and the body's size and hash, streams, sets cookies, fails on
request. Wrapped in wsgiref's validator, so every environ is checked
against PEP 3333 whichever protocol built it."""

import hashlib
import json
from wsgiref.validate import validator


def read_body(environ):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    size = 0
    while True:
        block = stream.read(65536)
        if not block:
            return size, digest.hexdigest()
        size += len(block)
        digest.update(block)


def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path.endswith("/stream"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (f"part {i}\n".encode() for i in range(50))
    if path.endswith("/missing"):
        start_response("404 Not Here", [("Content-Type", "text/plain")])
        return [b"nothing here\n"]
    if path.endswith("/fail"):
        raise RuntimeError("gateway app failure")
    if path.endswith("/cookies"):
        start_response("200 OK", [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/"),
                                  ("Content-Type", "text/plain")])
        return [b"two cookies\n"]
    size, sha = read_body(environ)
    data = {k: v for k, v in environ.items() if isinstance(v, str)}
    data["_body_size"] = size
    data["_body_sha256"] = sha
    out = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [out]


application = validator(_app)
