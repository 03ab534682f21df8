"""Real servers for the remote-file tests and bench: moto's S3 server in a subprocess on
127.0.0.1, and a fault-injecting HTTP proxy in front of it (drops, delays, truncates or answers
503 for chosen range reads, a bounded number of times)."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

CREDENTIALS = {"key": "testing", "secret": "testing"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storage_options(endpoint_url: str) -> dict:
    """What a user passes to reach an S3-compatible server at ``endpoint_url``."""
    return {**CREDENTIALS, "endpoint_url": endpoint_url}


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1 and a free port, stopped by stop()."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto server did not start")
                time.sleep(0.1)

    def upload(self, local_path: str, bucket: str, key: str) -> str:
        """Put a file in the server (creating the bucket); returns its s3:// URL."""
        import s3fs
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **storage_options(self.url))
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        fs.put(local_path, f"{bucket}/{key}")
        return f"s3://{bucket}/{key}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class FaultProxy:
    """An HTTP proxy on 127.0.0.1 forwarding to ``upstream`` (host, port).

    add_fault(mode, count, range_start): the next ``count`` GET requests with a Range header
    (starting at byte ``range_start``, or any) get ``mode`` instead of the server's answer:
    "503" (an S3 SlowDown error), "drop" (the connection closed with no answer), "delay"
    (``delay_s`` of silence, then closed), "truncate" (the headers and half the body, then
    closed).  ``served`` lists (mode, range) of every fault served; ``requests`` counts GETs."""

    def __init__(self, upstream_port: int, delay_s: float = 3.0):
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.faults: list[list] = []        # [mode, remaining count, range_start or None]
        self.served: list[tuple[str, str]] = []
        self.range_requests = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                fault = proxy._take_fault(self.command, self.headers.get("Range"))
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault == "delay":
                    time.sleep(proxy.delay_s)
                    self.close_connection = True
                    return
                if fault == "503":
                    payload = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown'
                               b'</Code><Message>Please reduce your request rate.</Message>'
                               b'</Error>')
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port,
                                                      timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items()
                               if k.lower() not in ("connection", "proxy-connection")}
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    self.send_response(response.status, response.reason)
                    for k, v in response.getheaders():
                        if k.lower() not in ("transfer-encoding", "connection",
                                             "content-length"):
                            self.send_header(k, v)
                    self.send_header("Content-Length", response.getheader(
                        "Content-Length", "0") if self.command == "HEAD" else str(len(data)))
                    self.end_headers()
                    if fault == "truncate":
                        self.wfile.write(data[:len(data) // 2])
                        self.wfile.flush()
                        self.close_connection = True
                        return
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def add_fault(self, mode: str, count: int, range_start: Optional[int] = None) -> None:
        assert mode in ("503", "drop", "delay", "truncate")
        with self.lock:
            self.faults.append([mode, count, range_start])

    def _take_fault(self, method: str, range_header: Optional[str]) -> Optional[str]:
        if method != "GET" or not range_header:
            return None
        start = int(range_header.split("=", 1)[1].split("-", 1)[0])
        with self.lock:
            self.range_requests += 1
            for fault in self.faults:
                mode, remaining, at = fault
                if remaining > 0 and (at is None or at == start):
                    fault[1] -= 1
                    self.served.append((mode, range_header))
                    return mode
        return None

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
