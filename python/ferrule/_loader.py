"""Finding the application named on the command line.

APP is one of:

* ``module`` -- the callable named ``application`` in it (the convention
  WSGI servers share);
* ``module:name`` or ``pkg.module:obj.attr``;
* ``module:factory()`` or ``module:factory('x', 2, debug=True)`` -- the
  arguments must be Python literals; they are never evaluated as code;
* a path to a ``.py`` or ``.wsgi`` file (mod_wsgi style), optionally followed
  by ``:name``; the callable defaults to ``application``.

Import paths are the most common deployment failure, so every failure is
raised as an AppLoadError whose ``report`` says what was looked for, what
went wrong (with the traceback) and which ``sys.path`` was searched.
"""

import ast
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import traceback

DEFAULT_CALLABLE = "application"


class AppLoadError(Exception):
    def __init__(self, report):
        super().__init__(report)
        self.report = report


def _sys_path_text():
    lines = "\n".join(f"    {p or '(current directory)'}" for p in sys.path)
    return f"sys.path searched:\n{lines}"


def _fail(summary, hint=None, with_traceback=False):
    parts = [summary]
    if with_traceback:
        parts.append(traceback.format_exc().rstrip())
    if hint:
        parts.append(f"Hint: {hint}")
    parts.append(_sys_path_text())
    raise AppLoadError("\n".join(parts))


def _split_spec(spec):
    """Split APP into (module or file, target expression)."""
    path_part, sep, target = spec, "", ""
    # A ':' may separate the target; a Windows drive letter is not a concern here.
    if ":" in spec:
        path_part, sep, target = spec.partition(":")
    return path_part, (target.strip() or DEFAULT_CALLABLE)


def _is_file_spec(path_part):
    # `myproject.wsgi` is usually the module wsgi in the package myproject;
    # it names a file only when such a file exists (or the name is a path).
    return os.sep in path_part or os.path.isfile(path_part)


def _import_module(name):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            _fail(
                f"Could not import module {name!r}: {exc}",
                hint="run ferrule from the directory that contains the module, "
                "or name that directory with --chdir or --pythonpath",
                with_traceback=True,
            )
        _fail(f"Importing module {name!r} failed: {exc}", with_traceback=True)
    except SystemExit as exc:
        _fail(f"Importing module {name!r} called sys.exit({exc.code!r})", with_traceback=True)
    except BaseException as exc:  # noqa: BLE001 - any import failure is reported
        _fail(f"Importing module {name!r} failed: {type(exc).__name__}: {exc}", with_traceback=True)


def _load_file(path):
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        _fail(f"Application file {path!r} does not exist (looked for {full})")
    directory = os.path.dirname(full)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    stem = re.sub(r"\W", "_", os.path.splitext(os.path.basename(full))[0])
    module_name = f"_ferrule_app_{stem}"
    loader = importlib.machinery.SourceFileLoader(module_name, full)
    spec = importlib.util.spec_from_file_location(module_name, full, loader=loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        loader.exec_module(module)
    except BaseException as exc:  # noqa: BLE001
        sys.modules.pop(module_name, None)
        _fail(f"Running application file {path!r} failed: {type(exc).__name__}: {exc}", with_traceback=True)
    return module


def _dotted(node):
    """['obj', 'attr'] for ``obj.attr``; None if the node is anything else."""
    names = []
    while isinstance(node, ast.Attribute):
        names.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    names.append(node.id)
    return list(reversed(names))


def _parse_target(target, spec):
    """(attribute path, args, kwargs or None when it is not a call)."""
    try:
        expr = ast.parse(target, mode="eval").body
    except SyntaxError:
        _fail(f"{target!r} in {spec!r} is not a name, a dotted name or a call with literal arguments")
    if isinstance(expr, ast.Call):
        names = _dotted(expr.func)
        try:
            args = [ast.literal_eval(a) for a in expr.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in expr.keywords if k.arg}
            if any(k.arg is None for k in expr.keywords):
                raise ValueError("**kwargs")
        except ValueError:
            _fail(f"The arguments in {target!r} must be Python literals (strings, numbers, "
                  "tuples, lists, dicts, True/False/None); they are never evaluated as code")
        call = (args, kwargs)
    else:
        names = _dotted(expr)
        call = None
    if names is None:
        _fail(f"{target!r} in {spec!r} is not a name, a dotted name or a call with literal arguments")
    return names, call


_prepared = False


def prepare_path(chdir=None, pythonpath=()):
    """Apply --chdir and --pythonpath, once per process, and make the working
    directory importable, as under other WSGI servers."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    if chdir:
        try:
            os.chdir(chdir)
        except OSError as exc:
            raise AppLoadError(f"--chdir {chdir}: {exc}") from None
    cwd = os.getcwd()
    for entry in reversed([os.path.abspath(p) for p in pythonpath]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def load_app(spec, chdir=None, pythonpath=()):
    """Import and return the WSGI callable named by ``spec``."""
    prepare_path(chdir, pythonpath)

    path_part, target = _split_spec(spec)
    if _is_file_spec(path_part):
        module = _load_file(path_part)
    else:
        if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", path_part):
            _fail(f"{path_part!r} is not a module name or a path to a .py/.wsgi file")
        module = _import_module(path_part)

    names, call = _parse_target(target, spec)
    obj = module
    walked = [path_part]
    for name in names:
        if not hasattr(obj, name):
            available = ", ".join(sorted(n for n in dir(obj) if not n.startswith("_"))[:30])
            _fail(
                f"{'.'.join(walked)!s} has no attribute {name!r} (looking for {target!r} in {spec!r})",
                hint=f"it has: {available or '(no public names)'}",
            )
        obj = getattr(obj, name)
        walked.append(name)
    if call is not None:
        args, kwargs = call
        if not callable(obj):
            _fail(f"{'.'.join(names)!r} in {spec!r} is a {type(obj).__name__}, which cannot be called")
        try:
            obj = obj(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001
            _fail(f"Calling the factory {target!r} failed: {type(exc).__name__}: {exc}", with_traceback=True)
    if obj is None:
        _fail(f"{target!r} in {spec!r} is None, not a WSGI callable")
    if not callable(obj):
        _fail(f"{target!r} in {spec!r} is a {type(obj).__name__}, not a WSGI callable")
    return obj
