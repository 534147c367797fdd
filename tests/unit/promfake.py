"""Fake Prometheus servers and clients for unit tests (the real one: tests/integration).

- :class:`FakePrometheus`: for ``run_explanation`` (the explanation routes' core).
- :class:`AnsweringPrometheus`: a client answering each range query from a dict (the ETL).
- :class:`PrometheusHttp`: an HTTP server on loopback answering what each test decides.

:class:`FakePrometheus`: what ``run_explanation`` asks of Prometheus is ``count(<selector>)``
at an instant and range queries of the selector.

The series come from a *source*: ``source(start, end, step)`` gives the series a range
query over [start, end] at ``step`` returns; the fake leaves out every sample before the
history's ``first`` (as Prometheus has nothing earlier) and answers ``count`` with
``count`` series from ``first`` on. It records the ranges asked for in ``ranges``."""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sla_common.prometheus import InstantSample, PrometheusClient, PrometheusError, RangeSeries

SeriesSource = Callable[[float, float, float], list[RangeSeries]]


class FakePrometheus:
    def __init__(self, source: SeriesSource, *, first: float, count: int) -> None:
        self.source = source
        self.first = first
        self.count = count
        self.ranges: list[tuple[float, float]] = []

    def query(self, query: str, time: float | None = None) -> list[InstantSample]:
        assert query.startswith("count(") and time is not None
        return [InstantSample({}, time, float(self.count))] if time >= self.first else []

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.ranges.append((start, end))
        out = []
        for s in self.source(start, end, step):
            keep = s.timestamps >= self.first
            if keep.any():
                out.append(RangeSeries(s.labels, s.timestamps[keep], s.values[keep]))
        return out


class AnsweringPrometheus(PrometheusClient):
    """Answers each range query from ``answers``: its series, or the exception given, raised;
    a query not in it is Prometheus' ``bad_data``. ``metadata`` gives the types in
    ``metadata`` (none: every series typed by its name, as for backfilled history). Records
    the queries and metadata asked, and whether it was closed."""

    def __init__(
        self,
        answers: Mapping[str, list[RangeSeries] | Exception],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__("http://prometheus.invalid", 1.0)
        self.answers = dict(answers)
        self.meta = dict(metadata or {})
        self.queries: list[str] = []
        self.metadata_asked: list[str | None] = []
        self.closed = False

    def query_range(self, query: str, start: float, end: float, step: float) -> list[RangeSeries]:
        self.queries.append(query)
        if query not in self.answers:
            raise PrometheusError("bad_data", f"unexpected query {query}", 400)
        answer = self.answers[query]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def metadata(self, metric: str | None = None) -> dict[str, str]:
        self.metadata_asked.append(metric)
        return {k: v for k, v in self.meta.items() if metric is None or k == metric}

    def close(self) -> None:
        self.closed = True
        super().close()


# An HTTP answer: status and body.
Answer = tuple[int, bytes]
Responder = Callable[[str, dict[str, str]], Answer]


class PrometheusHttp:
    """A stand-in Prometheus on a free loopback port, used as a context manager: records each
    POST's path and form (``requests``), answers with ``respond(path, form)``; while
    ``hold`` is clear every request waits for it (at most ``hold_s``)."""

    def __init__(self, respond: Responder, hold_s: float = 30.0) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.lock = threading.Lock()
        self.hold = threading.Event()
        self.hold.set()
        self.respond = respond
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}
                with fake.lock:
                    fake.requests.append((self.path, form))
                fake.hold.wait(hold_s)
                status, body = fake.respond(self.path, form)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]

    def __enter__(self) -> PrometheusHttp:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()
