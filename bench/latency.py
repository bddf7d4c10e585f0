"""Latency at a fixed request rate, coordinated omission corrected.

    make bench-latency                      # hello, json, flask; 10 s at each rate
    .venv/bin/python bench/latency.py --apps hello --seconds 5

wrk measures latency at saturation, where every server's p99 is mostly
queueing. Here each server gets the same fixed rate, well below saturation:

1. Saturation: each server's requests/s with wrk (64 connections, pinned as
   in bench/run.py), one server after the other; the best peer's (every
   server but ferrule) sets the rates.
2. For 50% and 90% of the best peer's saturation, every server in turn
   gets that rate from oha (`-q RATE --latency-correction`: latency is
   measured from when each request was due to be sent, not from when the
   client got round to sending it, so a server that stalls is charged for
   the requests that queued behind the stall), 64 connections, and its
   p50, p99 and p99.9 are kept. A run during which the host took more than
   run.STEAL_LIMIT_PCT of a core is run again (run.STEAL_RETRIES times),
   and the least robbed kept. A server that could not keep up with the
   rate (oha's achieved rate under 97% of it) is marked.

Target (issue: tail latency): ferrule's p99 and p99.9 at most the best
peer's, at both rates, in the same run. Writes
bench/results/<date>-latency.md. oha is built from crates.io into
bench/.tools by bench/setup.sh.
"""

import argparse
import datetime
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import run

OHA = run.BENCH / ".tools" / "bin" / "oha"
APPS = {"hello": ("hello", 13), "json": ("json_app", 75), "flask": ("flask_app", None)}
SERVERS = ["ferrule", "bjoern", "fastwsgi", "granian", "gunicorn"]
RATES = (0.5, 0.9)
CONNECTIONS = 64


def oha(port, rate, seconds, cpus="1"):
    """One fixed-rate run: (p50, p99, p99.9 in ms, achieved rate, errors)."""
    cmd = run.pin(cpus) + [str(OHA), "-z", f"{seconds}s", "-q", str(int(rate)), "-c", str(CONNECTIONS),
                           "--latency-correction", "--no-tui", "--output-format", "json",
                           f"http://127.0.0.1:{port}/"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
        data = json.loads(out.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError):
        return None
    pct = data.get("latencyPercentiles", {})
    summary = data.get("summary", {})
    # Requests still in flight when the run's time is up are "aborted due
    # to deadline": the end of the run, not the server's failure.
    errors = sum(n for what, n in data.get("errorDistribution", {}).items() if "deadline" not in what)
    ms = lambda key: (pct.get(key) or float("nan")) * 1000.0  # noqa: E731
    return ms("p50"), ms("p99"), ms("p99.9"), summary.get("requestsPerSec", 0.0), errors


def least_robbed(measure, label):
    """Runs `measure` again while the host's steal is above the limit: the
    least robbed (result, steal)."""
    kept = None
    for attempt in range(1 + run.STEAL_RETRIES):
        if attempt:
            time.sleep(run.STEAL_PAUSE_S)
        ticks = run.core_ticks()
        result = measure()
        stolen = run.steal_pct(ticks, run.core_ticks())
        print(f"{label}: {result} steal {stolen:.1f}%", flush=True)
        if kept is None or stolen < kept[1]:
            kept = (result, stolen)
        if stolen <= run.STEAL_LIMIT_PCT:
            break
    return kept


def measure_app(name, seconds, servers):
    module, expect = APPS[name]
    w = dict(name=f"latency_{name}", app=module, expect=expect)
    running, rows = {}, {}
    try:
        for server in servers:
            r, failed = run.start_server(server, w)
            if failed:
                print(f"{name} {server}: {failed}", flush=True)
            else:
                running[server] = r
        saturation = {}
        for server, r in running.items():
            run.wrk(r.port, 1, CONNECTIONS, {}, cpus="1")  # warm-up
            (rps, _, errors, _), stolen = least_robbed(
                lambda: run.wrk(r.port, seconds, CONNECTIONS, {}, cpus="1"), f"{name} {server} saturation")
            saturation[server] = rps if not errors else float("nan")
        peers = [s for s in running if s != "ferrule" and not math.isnan(saturation[s])]
        best_peer = max(peers, key=lambda s: saturation[s]) if peers else None
        if best_peer is None:
            return None
        for fraction in RATES:
            rate = saturation[best_peer] * fraction
            for server, r in running.items():
                result, stolen = least_robbed(lambda: oha(r.port, rate, seconds),
                                              f"{name} {server} at {rate:,.0f}/s")
                rows[(fraction, server)] = (result, stolen)
        return saturation, best_peer, rows
    finally:
        for r in running.values():
            r.stop()


def fmt(result, rate):
    if result is None:
        return "failed"
    p50, p99, p999, achieved, errors = result
    text = f"{p50:.2f} / {p99:.2f} / {p999:.2f}"
    if errors:
        text += f" ({errors} errors)"
    if achieved < 0.97 * rate:
        text += f" (kept up with {achieved:,.0f}/s only)"
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", default="hello,json,flask")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    if not OHA.exists():
        print(f"{OHA} is missing: run bench/setup.sh", file=sys.stderr)
        return 2
    servers = [s for s in SERVERS if s in args.servers.split(",")]
    stamp = datetime.date.today().isoformat()
    lines = [f"# ferrule latency at a fixed rate, {stamp}", "",
             f"oha `-q RATE --latency-correction`, {CONNECTIONS} connections, {args.seconds} s a run; servers on "
             "core 0, the client on core 1. Rates are 50% and 90% of the best peer's saturation (wrk, same "
             "run). Cells: p50 / p99 / p99.9 in ms; steal is the most the host took of a core during the "
             "server's run.", ""]
    met_all = True
    for name in args.apps.split(","):
        measured = measure_app(name, args.seconds, servers)
        if measured is None:
            lines += [f"## {name}", "", "no peer measured", ""]
            met_all = False
            continue
        saturation, best_peer, rows = measured
        lines += [f"## {name}", "",
                  "Saturation (wrk): " + ", ".join(f"{s} {saturation[s]:,.0f}/s" for s in saturation)
                  + f"; best peer {best_peer}.", "",
                  "| rate | " + " | ".join(saturation) + " | ferrule's p99 and p99.9 at most the best peer's |",
                  "|---" * (len(saturation) + 2) + "|"]
        for fraction in RATES:
            rate = saturation[best_peer] * fraction
            cells = []
            for server in saturation:
                result, stolen = rows[(fraction, server)]
                cells.append(f"{fmt(result, rate)}, steal {stolen:.1f}%")
            ours = rows[(fraction, "ferrule")][0] if "ferrule" in saturation else None
            # The peers that measured something: no NaN, whatever their
            # errors (a peer that fails is no bar to clear).
            peer_tails = [t for t in (rows[(fraction, s)][0] for s in saturation if s != "ferrule")
                          if t and not math.isnan(t[1]) and not math.isnan(t[2])]
            # ferrule must answer every request and keep up with the rate.
            ours_clean = bool(ours and ours[4] == 0 and ours[3] >= 0.97 * rate
                              and not math.isnan(ours[1]) and not math.isnan(ours[2]))
            met = bool(ours_clean and peer_tails
                       and ours[1] <= min(t[1] for t in peer_tails)
                       and ours[2] <= min(t[2] for t in peer_tails))
            met_all &= met
            lines.append(f"| {fraction:.0%} ({rate:,.0f}/s) | " + " | ".join(cells) + f" | {'yes' if met else 'no'} |")
        lines.append("")
    lines.append(f"Every target met: {'yes' if met_all else 'no'}.")
    report = run.RESULTS / f"{stamp}-latency.md"
    report.write_text("\n".join(lines) + "\n")
    print(f"\nwrote {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
