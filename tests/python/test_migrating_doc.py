"""docs/migrating.md's examples run as written: its gunicorn.conf.py and
uwsgi.ini blocks load under --check-config with no warning, and each of its
command lines loads with --check-config added."""

import re
import shlex
import textwrap
from pathlib import Path

import pytest

from conftest import run_ferrule

DOC = (Path(__file__).resolve().parents[2] / "docs" / "migrating.md").read_text()


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", DOC, re.S)


@pytest.fixture
def project(tmp_path):
    """The `myproject` the examples name."""
    package = tmp_path / "myproject"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(textwrap.dedent('''
        def application(environ, start_response):
            start_response("200 OK", [])
            return [b"myproject"]
    '''))
    return tmp_path


def test_the_doc_has_examples():
    assert blocks("python") and blocks("ini") and len(blocks("sh")) >= 3


@pytest.mark.parametrize("index", range(len(blocks("python"))))
def test_gunicorn_conf_examples(project, index):
    (project / "gunicorn.conf.py").write_text(blocks("python")[index])
    result = run_ferrule("myproject.wsgi", "--check-config", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr


@pytest.mark.parametrize("index", range(len(blocks("ini"))))
def test_uwsgi_ini_examples(project, index):
    (project / "uwsgi.ini").write_text(blocks("ini")[index])
    result = run_ferrule("--ini", "uwsgi.ini", "--check-config", cwd=project)
    assert result.returncode == 0, result.stderr
    assert "[WARNING]" not in result.stderr, result.stderr


@pytest.mark.parametrize("index", range(len(blocks("sh"))))
def test_command_line_examples(project, index):
    (project / "gunicorn.conf.py").write_text(blocks("python")[0])
    (project / "uwsgi.ini").write_text(blocks("ini")[0])
    for line in blocks("sh")[index].strip().splitlines():
        words = shlex.split(line)
        env = {}
        while "=" in words[0] and not words[0].startswith("-"):
            key, _, value = words.pop(0).partition("=")
            env[key] = value
        assert words[0] == "ferrule", line
        result = run_ferrule(*words[1:], "--check-config", cwd=project, env=env)
        assert result.returncode == 0, (line, result.stderr)
