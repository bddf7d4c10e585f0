"""Overload protection (--queue-timeout): requests that waited too long for
an application thread are answered 503 with Retry-After, without running
the application, while the request that held the thread completes."""

import threading

import httpx


def burst_behind_a_slow_request(server, burst=8):
    """Starts a 2-second request on the worker's one thread, sends `burst`
    requests behind it, and returns (the slow response, the burst's)."""
    slow = []
    thread = threading.Thread(
        target=lambda: slow.append(httpx.get(server.url + "/sleep?s=2&reached=slow", timeout=30)))
    thread.start()
    server.wait_for_log("app reached: slow")
    answers = [None] * burst

    def one(i):
        answers[i] = httpx.get(f"{server.url}/list3?reached=burst{i}", timeout=30)

    senders = [threading.Thread(target=one, args=(i,)) for i in range(burst)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(30)
    thread.join(30)
    return slow[0], answers


def test_requests_that_waited_past_the_queue_timeout_get_503(serve):
    server = serve("behaviours", "--threads", "1", "--queue-timeout", "0.3", "--access-logfile", "-")
    slow, answers = burst_behind_a_slow_request(server)
    assert slow.status_code == 200
    for resp in answers:
        assert resp.status_code == 503, resp.text
        assert resp.headers["retry-after"] == "1"
        assert resp.text == "503 Service Unavailable\n"
    # None of them ran the application.
    assert "app reached: burst" not in server.log
    server.wait_for_log("refused (503): waited longer than --queue-timeout for an application thread")
    server.wait_for_stdout('"GET /list3?reached=burst0 HTTP/1.1" 503')
    # A request that did not wait runs as usual.
    assert httpx.get(server.url + "/list3").status_code == 200


def test_without_a_queue_timeout_the_burst_waits_and_is_served(serve):
    server = serve("behaviours", "--threads", "1")
    slow, answers = burst_behind_a_slow_request(server, burst=4)
    assert slow.status_code == 200
    assert [resp.status_code for resp in answers] == [200] * 4


def test_a_bad_queue_timeout_is_named(serve):
    from conftest import run_ferrule

    proc = run_ferrule("behaviours", "--queue-timeout", "soon", "--check-config")
    assert proc.returncode == 2
    assert "--queue-timeout" in proc.stderr and "'soon' is not a number of seconds" in proc.stderr
