#!/usr/bin/env bash
# Runs every parser's fuzz target (fuzz/fuzz_targets) for a bounded time:
# `scripts/fuzz.sh [SECONDS] [TARGET...]`, 20 seconds each by default.
# cargo-fuzz drives libFuzzer on the stable toolchain (no sanitizer:
# `-s none`; the targets assert what they check). Each target's corpus
# grows in fuzz/corpus/ from the seeds in fuzz/seeds/; a crash is written
# to fuzz/artifacts/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
shift || true
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(http1_head chunked uwsgi scgi fastcgi proxy_protocol)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2 --quiet
fi

python=$(pwd)/.venv/bin/python
export PYO3_PYTHON=$python
# The targets link the crate, and with it libpython.
LD_LIBRARY_PATH=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LD_LIBRARY_PATH

cd fuzz
cargo fuzz build -s none
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target"
    log=$(mktemp)
    if ! cargo fuzz run -s none "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -max_len=65536 -print_final_stats=1 >"$log" 2>&1; then
        tail -60 "$log" >&2
        echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    echo "fuzz: $target: $runs inputs in ${seconds}s, no failure"
    rm -f "$log"
done
