"""Serving an ASGI app the way every HTTP service of the suite does (uvicorn on
HTTP_HOST:HTTP_PORT, sla_common's logging kept, a graceful stop that exits 0)."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

import uvicorn

GRACEFUL_SHUTDOWN_S = 30


class Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT once it has shut down gracefully, so the process
    would end "killed by SIGTERM"; like the other services, these exit 0 after draining.
    A second SIGINT still forces the exit, as in uvicorn."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        else:
            self.should_exit = True


def serve(app: Any, host: str, port: int, *, access_log: bool) -> bool:
    """Serve ``app`` until SIGTERM/SIGINT (requests in flight finish, for up to
    :data:`GRACEFUL_SHUTDOWN_S`); False when the server could not start."""
    server = Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_config=None,  # keep sla_common's logging set-up
            access_log=access_log,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            server_header=False,
        )
    )
    server.run()
    return bool(server.started)
