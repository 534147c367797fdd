"""What every ``python -m <service>`` does first: its command line (``--help``), settings from
the environment, then the logging they configure. Invalid settings are one logged line naming
the variable, and the caller exits with :data:`EXIT_BAD_SETTINGS`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType
from typing import TypeVar

from sla_common.logging import setup_logging
from sla_common.settings import CommonSettings, SettingsError, load_settings

EXIT_BAD_SETTINGS = 2

S = TypeVar("S", bound=CommonSettings)


def settings_and_logging(cls: type[S], log: logging.Logger) -> S | None:
    """``cls`` from the environment with logging set up from it; None (logged) if invalid."""
    try:
        settings = load_settings(cls)
    except SettingsError as e:
        setup_logging()
        log.error("%s", e)
        return None
    setup_logging(settings.log_level, settings.log_format)
    return settings


def service_start(
    prog: str, doc: str | None, cls: type[S], log: logging.Logger, argv: list[str] | None
) -> S | None:
    """A service that takes no arguments: ``argv`` parsed (``--help`` shows ``doc``, the
    module's docstring), then :func:`settings_and_logging`."""
    argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args(argv)
    return settings_and_logging(cls, log)


def stop_on_signals(log: logging.Logger, what: str) -> threading.Event:
    """An event SIGTERM and SIGINT set (logging ``what`` the service does before it stops)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: %s", signum, what)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop
