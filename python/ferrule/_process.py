"""Python-side steps of the process manager, called from Rust."""

import faulthandler
import gc
import os
import signal
import sys

# Kept referenced: faulthandler writes to the file's descriptor.
_dump_file = None


def freeze_preloaded():
    """After --preload: move the app's objects out of the collector's view
    (gc.freeze), so collections in workers do not write to the shared pages."""
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()


def prepare_worker(error_log_path, title):
    """In a new worker: SIGUSR2 (sent by the master on --timeout) writes
    every thread's Python stack to the error log; name the process."""
    global _dump_file
    if error_log_path:
        _dump_file = open(error_log_path, "a", buffering=1)
        target = _dump_file
    else:
        target = sys.stderr
    # Fatal signals (SIGSEGV...) and the master's timeout signal both write
    # every thread's stack, without needing the GIL.
    faulthandler.enable(file=target, all_threads=True)
    faulthandler.register(signal.SIGUSR2, file=target, all_threads=True, chain=False)
    set_title(title)


def set_title(title):
    """The process title ps and top show, with setproctitle installed."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.setproctitle(title)


def source_files():
    """The project's loaded Python sources, for --reload: every module file
    outside the interpreter's own prefixes (stdlib, site-packages)."""
    prefixes = tuple({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py"):
            continue
        real = os.path.realpath(path)
        if not real.startswith(prefixes):
            files.add(real)
    return sorted(files)


def flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed stream is fine here
            pass
