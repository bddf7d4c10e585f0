"""Large bodies stream: a 64 MiB response read slowly and a 64 MiB upload
leave the memory of the worker that serves them bounded, far below the body
size. The worker is sampled, not the master: the master serves nothing."""

import hashlib
import json
import socket
import threading
import time

from conftest import Reader, worker_pids

MIB = 1024 * 1024
SIZE = 64 * MIB


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


class PeakRss:
    """Samples a process's RSS in the background."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = rss(pid)
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while self.running:
            self.peak = max(self.peak, rss(self.pid))
            time.sleep(0.02)

    def stop(self):
        self.running = False
        self.thread.join()
        return self.peak


def test_slowly_read_64mib_response_keeps_rss_bounded(serve):
    server = serve("behaviours")
    [worker] = worker_pids(server, 1)
    baseline = rss(worker)
    sampler = PeakRss(worker)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(server.address)
        sock.sendall(b"GET /big?size=%d&chunk=262144 HTTP/1.1\r\nHost: t\r\n\r\n" % SIZE)
        received = 0
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        head, rest = buf.split(b"\r\n\r\n", 1)
        assert b"200 OK" in head and b"chunked" in head
        received = len(rest)
        while True:
            block = sock.recv(256 * 1024)
            if not block:
                break
            received += len(block)
            if block.endswith(b"0\r\n\r\n"):
                break
            time.sleep(0.001)  # a slow reader
    peak = sampler.stop()
    assert received > SIZE
    assert peak - baseline < 24 * MIB, f"RSS grew by {(peak - baseline) / MIB:.1f} MiB for a 64 MiB body"


def test_64mib_upload_keeps_rss_bounded(serve):
    server = serve("behaviours", "--limit-request-body", str(SIZE))
    [worker] = worker_pids(server, 1)
    baseline = rss(worker)
    sampler = PeakRss(worker)
    digest = hashlib.sha256()
    block = bytes(range(256)) * 4096  # 1 MiB
    with socket.create_connection(server.address, timeout=60) as sock:
        sock.sendall(b"POST /upload-size HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % SIZE)
        for _ in range(SIZE // len(block)):
            sock.sendall(block)
            digest.update(block)
        resp = Reader(sock).read_response()
    peak = sampler.stop()
    assert json.loads(resp.body) == {"size": SIZE, "sha256": digest.hexdigest()}
    assert peak - baseline < 24 * MIB, f"RSS grew by {(peak - baseline) / MIB:.1f} MiB for a 64 MiB upload"
