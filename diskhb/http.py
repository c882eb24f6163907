"""The daemon's HTTP endpoint: /metrics (Prometheus) and /status (the snapshot as JSON).

Rules: at most CLIENTS_MAX connections served at once (more are closed at once), every socket with a
timeout (a scraper that stops reading cannot hold a thread), and a snapshot is asked of the
daemon's loop with a bounded wait (the loop never waits for us).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import REGISTRY, generate_latest

CLIENTS_MAX = 8
SOCKET_TIMEOUT_S = 5.0


def make_server(host: str, port: int, snapshot: Callable[[], dict | None]) -> ThreadingHTTPServer:
    slots = threading.BoundedSemaphore(CLIENTS_MAX)

    class Handler(BaseHTTPRequestHandler):
        timeout = SOCKET_TIMEOUT_S  # applied to the connection's socket by StreamRequestHandler

        def do_GET(self):  # noqa: N802 - http.server's naming
            if self.path.startswith("/metrics"):
                body, ctype = generate_latest(REGISTRY), "text/plain; version=0.0.4; charset=utf-8"
            elif self.path.startswith("/status"):
                body, ctype = json.dumps(snapshot() or {"error": "daemon busy"}).encode(), "application/json"
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes are not news
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        request_queue_size = CLIENTS_MAX

        def process_request(self, request, client_address):
            # A thread per connection, but never more than CLIENTS_MAX: the rest are closed at once.
            if not slots.acquire(blocking=False):
                self.shutdown_request(request)
                return
            request.settimeout(SOCKET_TIMEOUT_S)
            super().process_request(request, client_address)

        def process_request_thread(self, request, client_address):
            try:
                super().process_request_thread(request, client_address)
            finally:
                slots.release()

    return Server((host, port), Handler)
