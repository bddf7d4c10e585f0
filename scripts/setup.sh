#!/usr/bin/env bash
# Idempotent set-up for `make run` and `make test`: the project's own
# virtualenv with its Python packages, and the Debian tools the tests use.
# Quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PYTHON=${PYTHON:-python3}

# Each tool the tests run, and the Debian package that has it (nginx,
# Apache httpd and lighttpd are the front ends of the gateway tests;
# cgi-fcgi is libfcgi's reference FastCGI client; HAProxy sends the PROXY
# protocol; valgrind counts instructions for `make bench-guard`; the
# prometheus package has the server and promtool the metrics tests use;
# nghttp2-client has h2load and nghttp, HTTP/2 clients).
need_apt=()
for pair in curl:curl wrk:wrk nginx:nginx apache2:apache2 lighttpd:lighttpd cgi-fcgi:libfcgi-bin haproxy:haproxy valgrind:valgrind promtool:prometheus h2load:nghttp2-client; do
    tool=${pair%%:*}
    package=${pair#*:}
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || need_apt+=("$package")
done
if ((${#need_apt[@]})); then
    echo "setup: installing ${need_apt[*]} with apt-get"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi

# Reinstall the Python requirements only when the list changed.
stamp="$VENV/.requirements-test.sha256"
want=$(sha256sum requirements-test.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing Python packages into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-test.txt
    echo "$want" > "$stamp"
fi
