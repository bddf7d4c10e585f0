import time


def application(environ, start_response):
    if environ["PATH_INFO"] == "/slow":
        time.sleep(0.05)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
