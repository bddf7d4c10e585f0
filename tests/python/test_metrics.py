"""Prometheus metrics (--metrics-bind): one scrape for the whole server,
checked by promtool and scraped by a real Prometheus server, counters that
survive a worker's replacement, gauges, client errors, and the settings'
errors."""

import os
import re
import signal
import socket
import subprocess
import threading
import time

import httpx
import pytest

from conftest import Server, run_ferrule, wait_until, worker_pids
from gateways import free_port

METRICS_AT = re.compile(r"Metrics at: (http://\S+/metrics)")


def metrics_url(server):
    server.wait_for(lambda: METRICS_AT.search(server.log), what="the 'Metrics at:' line")
    return METRICS_AT.search(server.log).group(1)


def scrape(server):
    resp = httpx.get(metrics_url(server), timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    return resp.text


def sample(text, name, **labels):
    """The value of one sample in a scrape."""
    want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(want + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {want} in:\n{text}")


def settled(server, check, what):
    """A scrape for which `check(text)` holds: a worker records a request
    just after its response's last byte, which the client may read first."""
    texts = []

    def holds():
        texts.append(scrape(server))
        try:
            return check(texts[-1])
        except AssertionError:
            return False

    wait_until(holds, what=what)
    return texts[-1]


def test_promtool_accepts_the_scrape(serve):
    server = serve("behaviours", "-w", "2", "--metrics-bind", "127.0.0.1:0")
    for _ in range(5):
        httpx.get(server.url + "/list3")
    text = scrape(server)
    check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert sample(text, "ferrule_workers") == 2
    assert sample(text, "ferrule_threads") == 2
    assert sample(text, "ferrule_worker_resident_memory_bytes", stat="max") > 1_000_000
    # The application's listener knows nothing of /metrics.
    assert httpx.get(server.url + "/metrics").text == "not found"
    # Only /metrics, GET or HEAD.
    base = metrics_url(server).rsplit("/", 1)[0]
    assert httpx.get(base + "/other").status_code == 404
    assert httpx.post(base + "/metrics").status_code == 405
    assert httpx.head(base + "/metrics").status_code == 200


def test_counts_add_up_across_workers_and_survive_a_replaced_worker(serve):
    server = serve("behaviours", "-w", "2", "--metrics-bind", "127.0.0.1:0", "--max-requests", "1000")
    with httpx.Client() as client:
        # One kept connection: one worker serves them all.
        for _ in range(29):
            assert client.get(server.url + "/list3").status_code == 200
        for _ in range(4):
            assert client.post(server.url + "/echo-body", content=b"x" * 100).status_code in (200, 404)
        victim = int(client.get(server.url + "/pid").text)
    text = settled(server, lambda t: sample(t, "ferrule_request_duration_seconds_count") == 34, "34 requests")
    assert sample(text, "ferrule_requests_total", method="GET", status="2xx") == 30
    assert sample(text, "ferrule_request_duration_seconds_count") == 34
    assert sample(text, "ferrule_application_duration_seconds_count") == 34
    assert sample(text, "ferrule_request_body_bytes_total") == 400
    sent = sample(text, "ferrule_response_body_bytes_total")
    assert sent >= 29 * len(httpx.get(server.url + "/list3").content)
    # The worker that served them killed: replaced, its requests still counted.
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log("replaced: crash")
    wait_until(lambda: victim not in worker_pids(server, 2), what="a replacement worker")
    text = settled(server, lambda t: sample(t, "ferrule_requests_total", method="GET", status="2xx") == 31,
                   "31 requests")
    assert sample(text, "ferrule_worker_restarts_total", reason="crash") == 1
    assert sample(text, "ferrule_worker_restarts_total", reason="timeout") == 0


def test_gauges_while_a_request_runs(serve):
    server = serve("behaviours", "--threads", "2", "--metrics-bind", "127.0.0.1:0")
    slow = threading.Thread(target=lambda: httpx.get(server.url + "/sleep?s=2&reached=slow", timeout=30))
    slow.start()
    server.wait_for_log("app reached: slow")
    text = scrape(server)
    slow.join(30)
    assert sample(text, "ferrule_requests_in_flight") == 1
    assert sample(text, "ferrule_threads_busy") == 1
    assert sample(text, "ferrule_connections_open") >= 1
    text = settled(server, lambda t: sample(t, "ferrule_requests_in_flight") == 0, "no request in flight")
    assert sample(text, "ferrule_threads_busy") == 0
    # The 2-second request is in the buckets above 1 s and below 2.5 s.
    assert sample(text, "ferrule_application_duration_seconds_bucket", le="1") == 0
    assert sample(text, "ferrule_application_duration_seconds_bucket", le="2.5") == 1


def test_client_errors_and_queue_timeouts_are_counted(serve):
    server = serve("behaviours", "--threads", "1", "--metrics-bind", "127.0.0.1:0", "--queue-timeout", "0.3")
    with socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 400")
    slow = threading.Thread(target=lambda: httpx.get(server.url + "/sleep?s=1.5&reached=slow", timeout=30))
    slow.start()
    server.wait_for_log("app reached: slow")
    assert httpx.get(server.url + "/list3", timeout=30).status_code == 503
    slow.join(30)
    text = settled(server, lambda t: sample(t, "ferrule_request_queue_seconds_count") == 2, "two queue waits")
    assert sample(text, "ferrule_client_errors_total", kind="bad_request") == 1
    assert sample(text, "ferrule_client_errors_total", kind="overloaded") == 1
    # A head refused unread has no method the server trusts.
    assert sample(text, "ferrule_requests_total", method="other", status="4xx") == 1
    assert sample(text, "ferrule_requests_total", method="GET", status="5xx") == 1
    # Queue waits are recorded with --queue-timeout: the slow request, the 503.
    assert sample(text, "ferrule_request_queue_seconds_count") == 2
    assert sample(text, "ferrule_request_queue_seconds_bucket", le="0.25") == 1


def test_a_real_prometheus_scrapes_the_server(serve, tmp_path):
    server = serve("behaviours", "-w", "2", "--metrics-bind", "127.0.0.1:0")
    target = metrics_url(server).split("//", 1)[1].split("/", 1)[0]
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: ferrule\n    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client() as client:
            for _ in range(25):
                assert client.get(server.url + "/list3").status_code == 200
        query = f"http://127.0.0.1:{port}/api/v1/query"

        def answered():
            try:
                result = httpx.get(query, params={"query": 'sum(ferrule_requests_total{status="2xx"})'},
                                   timeout=5).json()["data"]["result"]
            except (httpx.HTTPError, KeyError, ValueError):
                return False
            return bool(result) and float(result[0]["value"][1]) == 25

        wait_until(answered, timeout=60, what="Prometheus to answer 25 requests")
        up = httpx.get(query, params={"query": "up"}, timeout=5).json()["data"]["result"]
        assert up[0]["value"][1] == "1"
    finally:
        prometheus.terminate()
        prometheus.wait(20)


def test_serve_answers_its_own_scrapes(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(
        "import ferrule, behaviours\n"
        "ferrule.serve(behaviours.application, bind='127.0.0.1:0', metrics_bind='127.0.0.1:0')\n")
    env = dict(os.environ, PYTHONPATH=os.path.join(os.path.dirname(__file__), "apps"))
    server = Server(None, wrapper=[os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), ".venv", "bin", "python"), str(script)], bind=[], env=env)
    try:
        httpx.get(server.url + "/list3")
        text = settled(server, lambda t: sample(t, "ferrule_requests_total", method="GET", status="2xx") == 1,
                       "one request")
        assert sample(text, "ferrule_workers") == 1
    finally:
        server.kill()


def test_bad_metrics_settings_are_named():
    proc = run_ferrule("behaviours", "--metrics-bind", "localhost", "--check-config")
    assert proc.returncode == 2 and "--metrics-bind" in proc.stderr and "not HOST:PORT" in proc.stderr
    port = free_port()
    proc = run_ferrule("behaviours", "-b", f"127.0.0.1:{port}", "--metrics-bind", f"0.0.0.0:{port}",
                       "--check-config")
    assert proc.returncode == 2 and "metrics need a port of their own" in proc.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        server = Server("behaviours", "--metrics-bind", f"127.0.0.1:{busy}", expect_ready=False)
        assert server.proc.wait(30) == 1
        assert f"--metrics-bind: cannot listen on 127.0.0.1:{busy}" in server.log


def test_readme_metrics_table_matches_the_code():
    from conftest import FERRULE, ROOT

    generated = subprocess.run([FERRULE, "--print-metrics-reference"], capture_output=True, text=True,
                               check=True).stdout
    assert generated.strip() in (ROOT / "README.md").read_text(), "README metrics table is stale: run `make docs`"
