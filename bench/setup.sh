#!/usr/bin/env bash
# Idempotent set-up for `make bench`: wrk from apt, the peers from PyPI in
# bench/.venv (apart from the project's .venv), and the hyper ceiling.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v wrk >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt
    echo "$want" > "$stamp"
fi
(cd hyper-hello && cargo build --release --quiet)
# oha sends at a fixed rate, measuring from when each request was due
# (bench/latency.py); built once into bench/.tools, for the targets that
# run it (`bench/setup.sh --latency`: a few minutes' build the first time).
if [ "${1:-}" = "--latency" ] && [ ! -x .tools/bin/oha ]; then
    cargo install oha --version 1.16.0 --locked --quiet --root .tools
fi
