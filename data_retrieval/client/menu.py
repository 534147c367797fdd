"""The interactive menu, and the per-partition report it (and ``report``) prints.

The menu lists the metrics actually stored (asked from the server each time it is shown),
lets the user pick one or all, and prints every analysis of each partition; then a
partition's full series on request. Input is read by a daemon thread from the raw stdin
descriptor, so the event loop never blocks on the keyboard and Ctrl-C or end of input
(Ctrl-D) ends the program at once, cleanly. A choice that is not offered is answered with
what is expected, and asked again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.client import render
from data_retrieval.client.api import (
    ClientError,
    InputError,
    RetrievalClient,
    collect,
    parse_time,
    points_of,
    time_range,
)

T = TypeVar("T")
Write = Callable[[str], None]
CONCURRENT_REPORTS = 8
QUIT, BACK, ALL, EXPLAIN = "q", "b", "a", "x"


def stdout_writer(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


# --------------------------------------------------------------------------- the report


@dataclass
class Report:
    """Every analysis of one series, as stored for its latest window."""

    series: pb.Series
    adf: pb.DickeyFuller | None = None
    adf_missing: str = ""
    aggregates: list[pb.Aggregate] = field(default_factory=list)
    forecast_summary: pb.ForecastSummary | None = None
    forecast: list[pb.ForecastPoint] = field(default_factory=list)
    hp_lambda: float = 0.0
    hp: list[pb.HodrickPrescottPoint] = field(default_factory=list)
    period: int = 0
    seasonal_strength: float = 0.0
    decomposition: list[pb.DecompositionPoint] = field(default_factory=list)
    acf_window_end: Timestamp | None = None
    acf_conf_bound: float = 0.0
    acf: list[pb.AutocorrelationLag] = field(default_factory=list)


def latest_window(series: pb.Series) -> pb.TimeRange | None:
    """The range of the series' latest analysis window, both ends included."""
    end = series.last_seen.seconds + 1
    start = series.window_start.seconds if series.HasField("window_start") else None
    return time_range(start, end)


async def fetch_report(client: RetrievalClient, series: pb.Series) -> Report:
    """All six analyses of ``series``, asked for concurrently."""
    sel = pb.SeriesSelector(series_key=series.ref.key)
    window = latest_window(series)
    report = Report(series)

    async def adf() -> None:
        try:
            report.adf = await client.dickey_fuller(sel)
        except ClientError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            report.adf_missing = e.details

    async def aggregates() -> None:
        report.aggregates = points_of(await collect(client.aggregates(sel, window)), "aggregates")

    async def forecast() -> None:
        # The freshest forecast: the points after the latest window.
        after = time_range(series.last_seen.seconds + 1, None)
        pages = await collect(client.forecast(sel, after))
        report.forecast = points_of(pages)
        if pages and pages[0].HasField("summary"):
            report.forecast_summary = pages[0].summary

    async def hp() -> None:
        pages = await collect(client.hodrick_prescott(sel, window))
        report.hp = points_of(pages)
        report.hp_lambda = pages[0].hp_lambda if pages else 0.0

    async def decomposition() -> None:
        pages = await collect(client.decomposition(sel, window))
        report.decomposition = points_of(pages)
        if pages:
            report.period, report.seasonal_strength = pages[0].period, pages[0].seasonal_strength

    async def acf() -> None:
        pages = await collect(client.autocorrelation(sel))
        report.acf = points_of(pages, "lags")
        if pages:
            report.acf_conf_bound = pages[0].conf_bound
            report.acf_window_end = pages[0].window_end

    await asyncio.gather(adf(), aggregates(), forecast(), hp(), decomposition(), acf())
    return report


def render_report(number: int, r: Report) -> str:
    s = r.series
    parts = [
        f"\n[{number}] {s.ref.metric}  {render.partition(s.ref)}\n",
        f"    key {s.ref.key}\n",
        f"    latest window ends {render.fmt_time(s.last_seen)}; stored since "
        f"{render.fmt_time(s.first_seen)}\n\n",
    ]
    blocks = [
        render.adf_block(r.adf)
        if r.adf is not None
        else f"Augmented Dickey-Fuller: {r.adf_missing}\n",
        render.aggregates_block(r.aggregates),
        render.forecast_block(r.forecast_summary, r.forecast),
        render.hp_block(r.hp_lambda, r.hp),
        render.decomposition_block(r.period, r.seasonal_strength, r.decomposition),
        render.acf_block(r.acf_window_end, r.acf_conf_bound, r.acf),
        render.skipped_block(s),
    ]
    parts += [render.indent(b, "    ") + "\n" for b in blocks if b]
    return "".join(parts)


async def write_reports(client: RetrievalClient, items: Sequence[pb.Series], write: Write) -> int:
    """Fetch reports concurrently (bounded), print them in order as they become ready."""
    gate = asyncio.Semaphore(CONCURRENT_REPORTS)

    async def one(series: pb.Series) -> Report:
        async with gate:
            return await fetch_report(client, series)

    tasks = [asyncio.ensure_future(one(s)) for s in items]
    try:
        for number, task in enumerate(tasks, start=1):
            write(render_report(number, await task))
        return len(tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def write_full_series(
    client: RetrievalClient, series: pb.Series, kind: str, write: Write
) -> None:
    sel = pb.SeriesSelector(series_key=series.ref.key)
    window = latest_window(series)
    write(f"\n{series.ref.key}\n")
    if kind == "h":
        write(render.hp_table(points_of(await collect(client.hodrick_prescott(sel, window)))))
    elif kind == "d":
        write(
            render.decomposition_table(points_of(await collect(client.decomposition(sel, window))))
        )
    elif kind == "f":
        write(render.forecast_table(points_of(await collect(client.forecast(sel)))))
    elif kind == "a":
        aggs = points_of(await collect(client.aggregates(sel, window)), "aggregates")
        write(render.aggregates_table(aggs))
    elif kind == "c":
        pages = await collect(client.autocorrelation(sel))
        bound = pages[0].conf_bound if pages else 0.0
        write(render.acf_table(points_of(pages, "lags"), bound))


# --------------------------------------------------------------------------- input


def take_ctrl_c(fd: int) -> bool:
    """Let Ctrl-C on the terminal ``fd`` quit the menu, even if SIGINT came in ignored.

    A non-interactive shell starts a background command (``cmd &``) with SIGINT ignored,
    and every descendant inherits that (a CI job or a script started this way, and whatever
    it runs). Python then installs no handler and asyncio none either, so Ctrl-C did
    nothing. When ``fd`` is a terminal whose foreground job is this process, its Ctrl-C is
    meant for us: take SIGINT back. True when it did so.
    """
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        return False
    try:
        if not os.isatty(fd) or os.tcgetpgrp(fd) != os.getpgrp():
            return False
    except OSError:  # not a terminal, or none controlling this process
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True


class LineReader:
    """Lines from a file descriptor, read by a daemon thread (the loop never blocks).

    Reads the raw descriptor, not ``sys.stdin``: a daemon thread blocked inside a buffered
    file at exit can abort the interpreter; one blocked in ``os.read`` cannot.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._queue: asyncio.Queue[str | None] = asyncio.Queue()
        self._thread: threading.Thread | None = None

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = ""
        while True:
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                data = b""
            pending += decoder.decode(data, final=not data)
            *lines, pending = pending.split("\n")
            if not data and pending:
                lines.append(pending)
            for line in lines:
                loop.call_soon_threadsafe(self._queue.put_nowait, line)
            if not data:
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    loop.call_soon_threadsafe(self._queue.put_nowait, None)
                return

    async def readline(self) -> str | None:
        """The next line without its newline; None at end of input."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(asyncio.get_running_loop(),), daemon=True
            )
            self._thread.start()
        line = await self._queue.get()
        if line is None:
            self._queue.put_nowait(None)  # stays at end of input
        return line


# --------------------------------------------------------------------------- the menu


class Menu:
    def __init__(self, client: RetrievalClient, reader: LineReader, write: Write) -> None:
        self.client = client
        self.reader = reader
        self.write = write

    async def ask(self, prompt: str, parse: Callable[[str], T | None], expected: str) -> T | str:
        """Ask until ``parse`` accepts the answer; QUIT at end of input."""
        while True:
            self.write(prompt)
            line = await self.reader.readline()
            if line is None:
                self.write("\n")
                return QUIT
            answer = line.strip()
            if answer.lower() == QUIT:
                return QUIT
            parsed = parse(answer)
            if parsed is not None:
                return parsed
            shown = answer if answer else "(nothing)"
            self.write(f"'{shown}' is not a choice: enter {expected}.\n")

    async def call(self, work: Awaitable[T]) -> T | None:
        """Run a server call; show its failure (the menu goes on) instead of raising."""
        try:
            return await work
        except ClientError as e:
            self.write(f"\nThe server answered {e.code.name}: {e.details}\n")
            return None

    async def run(self) -> int:
        self.write(f"SLA Monitor: stored analyses at {self.client.target}\n")
        while True:
            stored = await self.call(self.client.series())
            if stored is None:
                retry = await self.ask(
                    "r = try again, q = quit > ",
                    lambda a: a if a.lower() == "r" else None,
                    "r or q",
                )
                if retry == QUIT:
                    return 1
                continue
            if not await self.metric_menu(stored):
                return 0

    async def metric_menu(self, stored: list[pb.Series]) -> bool:
        """One pass of the main menu; False when the user quits."""
        by_metric = [
            (name, list(group))
            for name, group in groupby(
                sorted(stored, key=lambda s: s.ref.metric), lambda s: s.ref.metric
            )
        ]
        if not by_metric:
            self.write("\nNo series stored yet (nothing written by data_storage so far).\n")
            again = await self.ask(
                "r = look again, q = quit > ", lambda a: a if a.lower() == "r" else None, "r or q"
            )
            return again != QUIT
        self.write(f"\n{len(stored)} series of {len(by_metric)} metrics stored\n\n")
        self.write(render.indent(render.metrics_table([(m, len(g)) for m, g in by_metric])))
        n = len(by_metric)

        def pick(answer: str) -> list[pb.Series] | str | None:
            if answer.lower() == ALL:
                return [s for _name, group in by_metric for s in group]
            if answer.lower() == EXPLAIN:
                return EXPLAIN
            if answer.isdigit() and 1 <= int(answer) <= n:
                return by_metric[int(answer) - 1][1]
            return None

        chosen = await self.ask(
            f"\nPick a metric: 1-{n}, a = all, x = explain an interval, q = quit > ",
            pick,
            f"a number from 1 to {n}, a, x or q",
        )
        if chosen == EXPLAIN:
            return await self.explain_menu(stored)
        if not isinstance(chosen, list):
            return False
        if await self.call(write_reports(self.client, chosen, self.write)) is None:
            return True  # the failure is shown; back to the list of metrics
        return await self.full_series_menu(chosen)

    async def explain_menu(self, stored: list[pb.Series]) -> bool:
        """Which series changed in an interval (the Explain RPC); False when the user quits.
        The candidates default to every series of the first stored series' instance."""
        instances = sorted({s.ref.labels["instance"] for s in stored if "instance" in s.ref.labels})
        default = f'{{instance="{instances[0]}"}}' if instances else ""

        def selector(answer: str) -> str | None:
            return answer or default or None

        def when(answer: str, blank: int | None = None) -> int | None:
            if not answer:
                return blank
            try:
                return parse_time(answer)
            except InputError:
                return None

        shown = f" (Enter: {default})" if default else ""
        chosen = await self.ask(
            f"\nCandidates, a PromQL selector{shown} > ", selector, "a PromQL selector"
        )
        if chosen == QUIT:
            return False
        times = "epoch seconds, ISO 8601 or a duration back such as -50m"
        start = await self.ask("Anomalous from (e.g. -50m) > ", when, times)
        if start == QUIT:
            return False
        now = int(time.time())
        end = await self.ask("until (Enter: now) > ", lambda a: when(a, now), times)
        if end == QUIT:
            return False
        answer = await self.call(self.client.explain(str(chosen), [(int(start), int(end))]))
        if answer is not None:
            self.write("\n" + render.explanation_block(answer))
        return True

    async def full_series_menu(self, chosen: list[pb.Series]) -> bool:
        n = len(chosen)
        kinds = {
            "h": "Hodrick-Prescott",
            "d": "decomposition",
            "f": "forecast",
            "a": "aggregates",
            "c": "autocorrelation",
        }

        def number(answer: str) -> int | str | None:
            if answer.lower() == BACK:
                return BACK
            if answer.isdigit() and 1 <= int(answer) <= n:
                return int(answer)
            return None

        def kind(answer: str) -> str | None:
            a = answer.lower()
            return a if a in kinds or a == BACK else None

        which = ", ".join(f"{k} = {v}" for k, v in kinds.items())
        while True:
            picked = await self.ask(
                f"\nFull series of partition 1-{n}, b = back to the metrics, q = quit > ",
                number,
                f"a partition number from 1 to {n}, b or q",
            )
            if picked == QUIT:
                return False
            if not isinstance(picked, int):  # BACK
                return True
            series = chosen[picked - 1]
            what = await self.ask(
                f"Which: {which}, b = back > ", kind, f"one of {', '.join(kinds)}, b or q"
            )
            if what == QUIT:
                return False
            if what == BACK:
                continue
            await self.call(write_full_series(self.client, series, str(what), self.write))
