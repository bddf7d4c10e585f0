"""Apps reachable through the different APP forms."""


def _text(body):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [body.encode()]

    return app


class Holder:
    app = staticmethod(_text("obj.attr"))


obj = Holder()
application = _text("pkg.module")


def factory(*args, **kwargs):
    return _text(f"factory{args!r}{sorted(kwargs.items())!r}")


not_callable = 42
