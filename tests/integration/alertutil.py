"""Alertmanager's webhook receiver, run by a test on the stack's STACK_ALERT_WEBHOOK_URL (the
stack's Alertmanager routes every alert there: scripts/stack.py's alertmanager.yml).

    with webhook_server(stack_env["STACK_ALERT_WEBHOOK_URL"]) as hook:
        alert = wait_until(lambda: hook.find(alertname="...", slo="..."), ...)
"""

from __future__ import annotations

import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit


class Webhook:
    """Every notification Alertmanager posted, as its JSON."""

    def __init__(self) -> None:
        self.notifications: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification, in arrival order."""
        with self.lock:
            return [a for n in self.notifications for a in n.get("alerts", [])]

    def find(self, status: str = "firing", **labels: str) -> dict[str, Any] | None:
        """The first alert with this status and these label values; None when none came."""
        for alert in self.alerts():
            if alert.get("status") != status:
                continue
            if all(alert["labels"].get(k) == v for k, v in labels.items()):
                return alert
        return None


@contextlib.contextmanager
def webhook_server(url: str) -> Iterator[Webhook]:
    """A webhook receiver listening on ``url``'s host and port while the block runs."""
    hook = Webhook()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with hook.lock:
                hook.notifications.append(json.loads(body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    parts = urlsplit(url)
    server = http.server.ThreadingHTTPServer(
        (parts.hostname or "127.0.0.1", parts.port or 80), Handler
    )
    thread = threading.Thread(target=server.serve_forever, name="alert-webhook", daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()
