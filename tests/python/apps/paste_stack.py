"""A counter app inside classic Paste middleware: sessions, gzip and the
interactive debugger (EvalException)."""

from paste.evalexception import EvalException
from paste.gzipper import middleware as gzip_middleware
from paste.session import SessionMiddleware


def counter(environ, start_response):
    if environ["PATH_INFO"] == "/fail":
        raise ValueError("counter failure for EvalException")
    session = environ["paste.session.factory"]()
    session["count"] = session.get("count", 0) + 1
    body = (f"count={session['count']} " + "padding " * 200).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = EvalException(gzip_middleware(SessionMiddleware(counter)))
