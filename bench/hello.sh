#!/usr/bin/env bash
# Hello-world throughput of ferrule against the no-Python hyper ceiling,
# measured in the same run: each server pinned to core 0, wrk to core 1.
# Usage: bench/hello.sh [SECONDS] [CONNECTIONS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
CONNS=${2:-64}
ROUNDS=${3:-3}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
(cd bench/hyper-hello && cargo build --release --quiet)
CEILING=bench/hyper-hello/target/release/hyper-hello
FERRULE=.venv/bin/ferrule

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() {
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$1/" >/dev/null && return 0
        sleep 0.05
    done
    echo "server on port $1 did not come up" >&2
    return 1
}

# Prints requests/s (median of ROUNDS runs) and fails the cell on any error.
measure() {
    local port=$1 results=()
    taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://127.0.0.1:$port/" >/dev/null  # warm-up
    for _ in $(seq 1 "$ROUNDS"); do
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$port/")
        if grep -qE "Non-2xx|Socket errors" <<<"$out"; then
            echo "errors during the run:" >&2
            echo "$out" >&2
            return 1
        fi
        results+=("$(awk '/Requests\/sec/ {print $2}' <<<"$out")")
    done
    printf '%s\n' "${results[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

# run_server NAME COMMAND...: the word PORT in COMMAND becomes the port.
run_server() {
    local name=$1; shift
    local port; port=$(free_port)
    taskset -c 0 "${@//PORT/$port}" >/dev/null 2>&1 &
    local pid=$!
    wait_ready "$port"
    local rps; rps=$(measure "$port")
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
    echo "$name $rps"
}

ceiling=$(run_server hyper "$CEILING" PORT | awk '{print $2}')
ferrule=$(run_server ferrule "$FERRULE" --chdir examples hello -b 127.0.0.1:PORT | awk '{print $2}')
echo "hello, 1 core, wrk -c$CONNS, ${SECS}s x $ROUNDS (median)"
echo "hyper (no Python): $ceiling req/s"
echo "ferrule:           $ferrule req/s  ($(python3 -c "print(f'{$ferrule/$ceiling:.2f}')") x hyper)"
