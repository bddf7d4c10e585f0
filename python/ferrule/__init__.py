"""ferrule: a WSGI (PEP 3333) server with a Rust core.

Run it from the command line (``ferrule myproject.wsgi``) or from Python::

    import ferrule
    ferrule.serve(app, bind="127.0.0.1:8000", threads=4)
"""

import re

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
    ``serve(app, bind=["127.0.0.1:8000", "unix:/run/app.sock"], threads=8)``;
    with ``workers`` above 1, a master forks that many worker processes,
    each serving ``app`` as already imported. Raises TypeError for a keyword
    that is no setting, ValueError for a bad value (both naming the
    keyword) and OSError when a listener cannot be opened.
    """
    if not callable(app):
        raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
    known = {name for name, _, _ in _ferrule.settings_keywords()}
    for name in settings:
        if name not in known:
            raise TypeError(
                f"serve() got an unexpected keyword argument {name!r}; "
                "help(ferrule.serve) lists the settings"
            )
    argv = settings_to_argv({"bind": bind, **settings})
    try:
        _ferrule.serve(app, argv)
    except ValueError as exc:
        raise ValueError(_as_keywords(str(exc))) from None
    except KeyboardInterrupt:
        # SIGINT already stopped the server gracefully; Python only noticed
        # the signal afterwards.
        pass


def _as_keywords(message):
    """A command-line parser's message in serve()'s words: `--threads <N>`
    is the keyword `threads`."""
    message = message.replace("For more information, try '--help'.", "").strip()
    message = re.sub(
        r"'--([a-z0-9-]+)(?:[ =][^']*)?'",
        lambda m: f"keyword {m.group(1).replace('-', '_')!r}",
        message,
    )
    return message.removeprefix("error: ")


def _settings_doc():
    lines = ["", "Settings (keyword arguments; the command line's flags):", ""]
    for name, value, meaning in _ferrule.settings_keywords():
        shown = f"{name}={value}" if value else f"{name}=True"
        lines.append(f"    {shown}")
        lines.append(f"        {meaning}")
    return "\n".join(lines)


serve.__doc__ += _settings_doc()
