import os
import tempfile

PATH = os.path.join(tempfile.gettempdir(), "ferrule-bench-10mib.bin")
SIZE = 10 * 1024 * 1024
if not os.path.exists(PATH) or os.path.getsize(PATH) != SIZE:
    with open(PATH + ".tmp", "wb") as f:
        f.write(os.urandom(SIZE))
    os.replace(PATH + ".tmp", PATH)


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(SIZE))])
    return environ["wsgi.file_wrapper"](open(PATH, "rb"), 65536)
