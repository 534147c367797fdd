"""One logging set-up for every service: plain text for people, JSON lines for collectors."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class RepeatFilter(logging.Filter):
    """Let one record per (logger, message template) through every ``interval_s`` seconds.

    kafka-python logs the same connection error about ten times a second while a broker is
    down; one line per half minute says as much and keeps the log readable.
    """

    def __init__(self, interval_s: float = 30.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        last = self._last.get(key)
        if last is not None and record.created - last < self.interval_s:
            return False
        self._last[key] = record.created
        return True


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # kafka-python logs every connection attempt and httpx every request at INFO.
    for chatty in ("kafka", "httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
    handler.addFilter(_KafkaRepeats())


class _KafkaRepeats(RepeatFilter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith("kafka") or super().filter(record)
