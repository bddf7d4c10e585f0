"""Returns the environ's native-string values and the body, as JSON, from
inside wsgiref.validate's validator, which asserts PEP 3333 conformance of
both the environ the server builds and the way it treats the response."""

import json
from wsgiref.validate import validator


def _echo(environ, start_response):
    # The validator allows only read(size); read until b''.
    body = b""
    while True:
        block = environ["wsgi.input"].read(65536)
        if not block:
            break
        body += block
    # Reading past the end returns b'' at once.
    assert environ["wsgi.input"].read(10) == b""
    data = {k: v for k, v in environ.items() if isinstance(v, str)}
    data["_body"] = body.decode("latin-1")
    data["_body_len"] = len(body)
    data["_flags"] = {
        k: environ[k]
        for k in ("wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once", "wsgi.input_terminated")
    }
    data["_version"] = list(environ["wsgi.version"])
    data["_has_file_wrapper"] = callable(environ.get("wsgi.file_wrapper"))
    out = json.dumps(data).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


application = validator(_echo)
