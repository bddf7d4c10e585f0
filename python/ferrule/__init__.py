"""ferrule: a WSGI (PEP 3333) server with a Rust core.

Run it from the command line (``ferrule myproject.wsgi``) or from Python::

    import ferrule
    ferrule.serve(app, bind="127.0.0.1:8000", threads=4)
"""

from ferrule import _ferrule
from ferrule._ferrule import ClientDisconnected, FileWrapper, __version__

__all__ = ["ClientDisconnected", "FileWrapper", "serve", "settings_to_argv", "__version__"]


def settings_to_argv(settings):
    """Turn ``serve()`` keyword arguments into command-line flags.

    Every keyword is the long flag with ``_`` for ``-`` (``threads=4`` is
    ``--threads 4``); a list repeats the flag; ``True`` passes a bare flag.
    The flags are parsed by the same declaration as the command line, so a
    bad value is reported the same way.
    """
    argv = []
    for name, value in settings.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            for item in value:
                argv.extend([flag, str(item)])
        else:
            argv.extend([flag, str(value)])
    return argv


def serve(app, bind="127.0.0.1:8000", **settings):
    """Serve the WSGI callable ``app`` until SIGINT or SIGTERM.

    Accepts every setting of the command line as a keyword argument, e.g.
    ``serve(app, bind=["127.0.0.1:8000", "unix:/run/app.sock"], threads=8)``.
    Raises ValueError for a bad setting and OSError when a listener cannot be
    opened.
    """
    if not callable(app):
        raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
    argv = settings_to_argv({"bind": bind, **settings})
    try:
        _ferrule.serve(app, argv)
    except KeyboardInterrupt:
        # SIGINT already stopped the server gracefully; Python only noticed
        # the signal afterwards.
        pass
