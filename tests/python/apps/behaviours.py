"""One app, many behaviours, chosen by PATH_INFO; used by the response,
input and error-handling tests. Counters live in module globals: the tests
run it in one process."""

import hashlib
import io
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs

CLOSED = []
LOCK = threading.Lock()


def q(environ, name, default=None):
    values = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).get(name)
    return values[0] if values else default


class Tracked:
    """A response iterable that records its close() call."""

    def __init__(self, chunks, tag, fail_at=None, delay=0.0):
        self.chunks = chunks
        self.tag = tag
        self.fail_at = fail_at
        self.delay = delay

    def __iter__(self):
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise ValueError("failure inside the response iterable")
            if self.delay:
                time.sleep(self.delay)
            yield chunk

    def close(self):
        with LOCK:
            CLOSED.append(self.tag)


def text(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain"), *extra])
    return [body if isinstance(body, bytes) else body.encode()]


def application(environ, start_response):
    path = environ["PATH_INFO"]
    reached = q(environ, "reached")
    if reached:
        # A test waits for this line to know its request got to the application.
        environ["wsgi.errors"].write(f"app reached: {reached}\n")
        environ["wsgi.errors"].flush()
    handler = ROUTES.get(path)
    if handler is None:
        return text(start_response, "not found", "404 Not Found")
    return handler(environ, start_response)


def r_status(environ, start_response):
    start_response(q(environ, "s"), [("Content-Type", "text/plain")])
    return [b"body"]


def r_header(environ, start_response):
    start_response("200 OK", [(q(environ, "name"), q(environ, "value"))])
    return [b"body"]


def r_headers_not_list(environ, start_response):
    start_response("200 OK", "Content-Type: text/plain")
    return [b"body"]


def r_exc_before(environ, start_response):
    raise RuntimeError("the app failed before start_response")


def r_exc_after(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked([b"first chunk", b"second"], "exc_after", fail_at=1)


def r_exc_info_replace(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise KeyError("handled")
    except KeyError:
        start_response("503 Custom Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
    return [b"replaced"]


def r_exc_info_after_sent(environ, start_response):
    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b"partial"
        try:
            raise KeyError("too late")
        except KeyError:
            start_response("500 Error", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"never"

    return gen()


def r_twice(environ, start_response):
    start_response("200 OK", [])
    start_response("200 OK", [])
    return [b"no"]


def r_write(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written ")
    write(b"directly")
    return []


def r_write_big(environ, start_response):
    """One write() of `size` bytes: more than a socket's buffer takes."""
    write = start_response("200 OK", [("Content-Type", "application/octet-stream")])
    write(b"w" * int(q(environ, "size")))
    return []


def r_write_and_iter(environ, start_response):
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written, ")
    return [b"then ", b"iterated"]


def r_lazy(environ, start_response):
    def gen():
        yield b""
        start_response("201 Created Lazily", [("Content-Type", "text/plain")])
        yield b"lazy body"

    return gen()


def r_lazy_error(environ, start_response):
    def gen():
        start_response("200 OK", [("Content-Type", "text/plain")])
        yield b""
        try:
            raise ValueError("changed my mind")
        except ValueError:
            start_response("500 Changed Mind", [("Content-Type", "text/plain")], sys.exc_info())
        yield b"error page"

    return gen()


def r_cl_more(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"12345", b"67890"]


def r_cl_less(environ, start_response):
    start_response("200 OK", [("Content-Length", "10")])
    return Tracked([b"12345"], "cl_less")


def r_gen(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked([b"a", b"", b"bc", b"def"], "gen")


def r_list3(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"one ", b"two ", b"three"]


def r_empty_gen(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return iter([b"", b""])


def r_no_content(environ, start_response):
    start_response(q(environ, "s", "204 No Content"), [("X-A", "1")])
    return [b"this body must not be sent"]


def r_str_body(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ["a str, not bytes"]


def r_no_start_response(environ, start_response):
    return [b"body without start_response"]


def r_closed(environ, start_response):
    with LOCK:
        body = json.dumps(CLOSED).encode()
    return text(start_response, body)


def r_file(environ, start_response):
    f = open(q(environ, "path"), "rb")
    f.seek(int(q(environ, "seek", "0")))
    headers = [("Content-Type", "application/octet-stream")]
    if q(environ, "cl"):
        headers.append(("Content-Length", q(environ, "cl")))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 4096)


def r_filelike(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return environ["wsgi.file_wrapper"](io.BytesIO(b"x" * 10000 + b"end"), 333)


def r_big(environ, start_response):
    size = int(q(environ, "size"))
    chunk = int(q(environ, "chunk", "65536"))
    # With `produced=TAG`, "app reached: TAG" is logged once `at` bytes
    # (default: half the body) have been made: a test waits for it to know
    # the generator got that far.
    produced = q(environ, "produced")
    at = int(q(environ, "at", str(size // 2)))
    headers = [("Content-Type", "application/octet-stream")]
    if q(environ, "cl"):
        headers.append(("Content-Length", str(size)))
    start_response("200 OK", headers)

    def gen():
        left = size
        block = b"z" * chunk
        while left > 0:
            n = min(left, chunk)
            yield block[:n]
            left -= n
            if produced and size - left >= at > size - left - n:
                environ["wsgi.errors"].write(f"app reached: {produced}\n")
                environ["wsgi.errors"].flush()

    return Tracked(gen(), "big")


def r_block_then_wait(environ, start_response):
    """A block of `size` bytes of b"A", then, once the file `marker`
    exists, b"B-END": a stream whose next block takes the application a
    while (server-sent events, long polls)."""
    size = int(q(environ, "size"))
    marker = q(environ, "marker")
    start_response("200 OK", [("Content-Type", "application/octet-stream")])

    def gen():
        yield b"A" * size
        environ["wsgi.errors"].write("app reached: waiting for the marker\n")
        environ["wsgi.errors"].flush()
        deadline = time.monotonic() + 30
        while not os.path.exists(marker) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield b"B-END"

    return gen()


# Pieces on both sides of the size from which bodies are sent from the
# application's own bytes instead of a copy, each with its own content.
MIXED_PIECES = [bytes([65 + i]) * n for i, n in enumerate([5, 40000, 16384, 16383, 1, 200000, 7])]


def r_big_list(environ, start_response):
    """A large response made whole at once: a list of 1 MiB blocks."""
    blocks = int(q(environ, "mib", "10"))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [b"L" * (1 << 20)] * blocks


def r_mixed_large(environ, start_response):
    mode = q(environ, "mode", "list")
    headers = [("Content-Type", "application/octet-stream")]
    if q(environ, "cl"):
        headers.append(("Content-Length", q(environ, "cl")))
    write = start_response("200 OK", headers)
    if mode == "gen":
        return iter(MIXED_PIECES)
    if mode == "write":
        for piece in MIXED_PIECES:
            write(piece)
        return []
    return list(MIXED_PIECES)


AFFINITY = []


class ThreadChecked:
    """A streamed response that reports, in each chunk and at close(),
    whether it runs on the thread that called the application."""

    def __init__(self, count, size):
        self.thread = threading.get_ident()
        self.count, self.size = count, size

    def __iter__(self):
        for _ in range(self.count):
            same = threading.get_ident() == self.thread
            yield (b"same" if same else b"MOVED") + b"." * (self.size - 5) + b"\n"

    def close(self):
        with LOCK:
            AFFINITY.append(threading.get_ident() == self.thread)


def r_affinity(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return ThreadChecked(int(q(environ, "n", "50")), int(q(environ, "size", "65536")))


def r_affinity_closes(environ, start_response):
    with LOCK:
        verdicts = list(AFFINITY)
    return text(start_response, json.dumps(verdicts))


def r_slow_stream(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return Tracked([b"tick\n"] * int(q(environ, "n", "3")), "slow_stream", delay=float(q(environ, "delay", "0.2")))


def r_wait_for_file(environ, start_response):
    """Yields two blocks, then waits (up to 10 s) for the client to create
    the file `path`, which it does once it has both."""
    path = q(environ, "path")

    def gen():
        yield b"first\n"
        yield b"second\n"
        deadline = time.monotonic() + 10
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield b"released\n" if os.path.exists(path) else b"timed out\n"

    start_response("200 OK", [("Content-Type", "text/plain")])
    return gen()


def r_sleep(environ, start_response):
    # With `reached=TAG`, "app reached: TAG" is logged before the sleep.
    if q(environ, "reached"):
        environ["wsgi.errors"].write(f"app reached: {q(environ, 'reached')}\n")
        environ["wsgi.errors"].flush()
    time.sleep(float(q(environ, "s", "1")))
    return text(start_response, "slept")


OVERLAP = {"now": 0, "most": 0}


def r_overlap(environ, start_response):
    """Sleeps; answers with the most calls of this route seen at once."""
    with LOCK:
        OVERLAP["now"] += 1
        OVERLAP["most"] = max(OVERLAP["most"], OVERLAP["now"])
    time.sleep(float(q(environ, "s", "0.5")))
    with LOCK:
        OVERLAP["now"] -= 1
        most = OVERLAP["most"]
    return text(start_response, str(most))


def r_sleep_pid(environ, start_response):
    time.sleep(float(q(environ, "s", "1")))
    return text(start_response, str(os.getpid()))


def r_body_error(environ, start_response):
    """Reads the whole body and reports the exception a client's mistake raises."""
    import ferrule

    try:
        environ["wsgi.input"].read()
    except ferrule.ClientDisconnected as e:
        body = f"{type(e).__module__}.{type(e).__name__} oserror={isinstance(e, OSError)}: {e}"
        return text(start_response, body)
    return text(start_response, "no error")


def r_upload_size(environ, start_response):
    stream = environ["wsgi.input"]
    digest = hashlib.sha256()
    total = 0
    while True:
        block = stream.read(65536)
        if not block:
            break
        total += len(block)
        digest.update(block)
    return text(start_response, json.dumps({"size": total, "sha256": digest.hexdigest()}))


def r_input(environ, start_response):
    stream = environ["wsgi.input"]
    op = q(environ, "op")
    if op == "read":
        result = [stream.read()]
    elif op == "read_none":
        result = [stream.read(None)]
    elif op == "read_minus":
        result = [stream.read(-1)]
    elif op == "read_n":
        n = int(q(environ, "n"))
        result = []
        while True:
            block = stream.read(n)
            result.append(block)
            if not block:
                break
    elif op == "readline":
        result = []
        while True:
            line = stream.readline()
            result.append(line)
            if not line:
                break
    elif op == "readline_n":
        n = int(q(environ, "n"))
        result = []
        while True:
            line = stream.readline(n)
            result.append(line)
            if not line:
                break
    elif op == "readlines":
        hint = q(environ, "hint")
        result = stream.readlines(int(hint)) if hint else stream.readlines()
        result.append(stream.read())
    elif op == "iter":
        result = list(stream)
    elif op == "none":
        result = []
    else:
        raise ValueError(op)
    body = json.dumps([r.decode("latin-1") for r in result]).encode()
    return text(start_response, body)


def r_errors(environ, start_response):
    environ["wsgi.errors"].write("message to wsgi.errors\n")
    environ["wsgi.errors"].writelines(["line one\n", "line two\n"])
    environ["wsgi.errors"].flush()
    return text(start_response, "logged")


def r_pid(environ, start_response):
    return text(start_response, str(os.getpid()))


def r_keep_input(environ, start_response):
    global KEPT
    KEPT = environ["wsgi.input"]
    return text(start_response, "kept")


def r_use_kept_input(environ, start_response):
    try:
        KEPT.read()
    except ValueError as exc:
        return text(start_response, f"ValueError: {exc}")
    return text(start_response, "no error")


def r_keep_callables(environ, start_response):
    global KEPT_CALLABLES
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    KEPT_CALLABLES = (start_response, write)
    return [b"kept"]


def r_use_kept_callables(environ, start_response):
    kept_start, kept_write = KEPT_CALLABLES
    errors = []
    for call in (lambda: kept_start("200 OK", []), lambda: kept_write(b"x")):
        try:
            call()
            errors.append("no error")
        except ValueError as exc:
            errors.append(str(exc))
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    fresh = start_response is not kept_start and write is not kept_write
    write(json.dumps({"errors": errors, "fresh": fresh}).encode())
    return []


def r_spin(environ, start_response):
    x = 0
    while True:  # a request that never ends, in pure Python
        x += 1


def r_segfault(environ, start_response):
    import ctypes

    ctypes.string_at(0)
    return text(start_response, "unreachable")


def r_exit(environ, start_response):
    os._exit(int(q(environ, "code", "7")))


HOG = []


def r_hog(environ, start_response):
    HOG.append(bytearray(int(q(environ, "kb", "0")) * 1024 or int(q(environ, "mb", "10")) * 1024 * 1024))
    return text(start_response, f"holding {len(HOG)}")


ROUTES = {
    name[2:].replace("_", "-"): fn
    for name, fn in list(globals().items())
    if name.startswith("r_")
}
ROUTES = {"/" + k: v for k, v in ROUTES.items()}
