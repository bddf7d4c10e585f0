CHUNK = b"c" * 100


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])

    def body():
        for _ in range(100):
            yield CHUNK

    return body()
