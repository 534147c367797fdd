"""``python -m data_retrieval.client [--target HOST:PORT] [COMMAND ...]``: read stored analyses.

Without a command: the interactive menu (list the stored metrics, pick one or all, see
every analysis of each partition, then any partition's full series). Commands for scripts
(``--json`` prints JSON instead of tables):

    series        [SELECTOR] [--json]          the series stored
    adf           SELECTOR [--at T] [--json]   Augmented Dickey-Fuller test (latest, or at T)
    report        SELECTOR                     every analysis of each series, as in the menu
    hp | decomposition | acf | aggregates | forecast
                  SELECTOR [--start T] [--end T] [--limit N] [--json]
    anomalies     [SELECTOR] [--detector D ...] [--status S ...] [--start T] [--end T]
                  [--limit N] [--json]      the anomaly detectors' windows, newest first
    explain       --selector PROMQL --anomalous START END [--anomalous START END ...]
                  [--reference START END] [--step S] [--max-ranked N] [--json]
                                               which series changed then (EXstream)

SELECTOR is ``--metric NAME [--label k=v ...]`` or ``--key SERIES_KEY``. A time T is epoch
seconds, ISO 8601 (UTC unless given) or a duration back from now such as ``-3h``.
The server is GRPC_TARGET (default 127.0.0.1:50051), each call's deadline GRPC_TIMEOUT_S;
its token GRPC_API_TOKEN (the local stack's is in .stack/stack.env); TLS with GRPC_TLS=true
(system roots) or GRPC_TLS_CA_FILE (a PEM CA to trust).

Exit codes: 0 done, 1 the server refused or failed (its message on stderr), 2 bad
arguments or settings, 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import grpc

from data_retrieval._pb.sla_monitor.retrieval.v1 import retrieval_pb2 as pb
from data_retrieval.client import render
from data_retrieval.client.api import (
    ClientError,
    InputError,
    RetrievalClient,
    parse_label,
    parse_time,
    selector,
    time_range,
)
from data_retrieval.client.menu import (
    LineReader,
    Menu,
    Write,
    stdout_writer,
    take_ctrl_c,
    write_reports,
)
from data_retrieval.client.settings import ClientSettings
from sla_common.cli import EXIT_BAD_SETTINGS, settings_and_logging

log = logging.getLogger("data_retrieval.client")

STREAMS = {
    # command: (client method, the repeated field of its items)
    "hp": ("hodrick_prescott", "points"),
    "decomposition": ("decomposition", "points"),
    "acf": ("autocorrelation", "lags"),
    "aggregates": ("aggregates", "aggregates"),
    "forecast": ("forecast", "points"),
}


def _add_selector(p: argparse.ArgumentParser, *, required: bool) -> None:
    p.add_argument("--metric", help="metric name, e.g. node_filefd_allocated")
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="K=V",
        help="label matcher (repeatable); a series with exactly these labels is the one meant",
    )
    p.add_argument("--key", help="a series key as stored, instead of --metric/--label")
    p.set_defaults(selector_required=required)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_retrieval.client",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", help="HOST:PORT of the service (default: GRPC_TARGET)")
    parser.add_argument("--timeout", type=float, help="deadline of each call, seconds")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("menu", help="the interactive menu (the default)")
    p = sub.add_parser("series", help="the series stored")
    _add_selector(p, required=False)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("adf", help="Augmented Dickey-Fuller test of one series")
    _add_selector(p, required=True)
    p.add_argument("--at", help="the latest test whose window ends at or before this time")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("report", help="every analysis of each matching series")
    _add_selector(p, required=True)
    for name in STREAMS:
        p = sub.add_parser(name, help=f"the stored {name} of the matching series")
        _add_selector(p, required=True)
        p.add_argument("--start", help="inclusive")
        p.add_argument("--end", help="exclusive")
        p.add_argument("--limit", type=int, default=0, help="at most this many items (0: all)")
        p.add_argument("--json", action="store_true")
    p = sub.add_parser("anomalies", help="the anomaly detectors' windows, newest first")
    _add_selector(p, required=False)
    p.add_argument("--detector", action="append", default=[], help="e.g. sigma (repeatable)")
    p.add_argument(
        "--status", action="append", default=[], choices=("SAFE", "WARN", "ERROR", "LEARNING")
    )
    p.add_argument("--start", help="windows starting at or after")
    p.add_argument("--end", help="windows starting before")
    p.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("explain", help="which series changed in the anomalous intervals")
    p.add_argument(
        "--selector", required=True, help='PromQL of the candidates, e.g. {instance="h:9100"}'
    )
    p.add_argument(
        "--anomalous",
        nargs=2,
        action="append",
        required=True,
        metavar=("START", "END"),
        help="an anomalous interval (repeatable)",
    )
    p.add_argument(
        "--reference",
        nargs=2,
        metavar=("START", "END"),
        help="default: the 6 h ending 1 h before the first anomalous interval",
    )
    p.add_argument("--step", type=float, default=0.0, help="seconds between points (0: auto)")
    p.add_argument("--max-ranked", type=int, default=0, help="ranked series shown (0: 20)")
    p.add_argument("--json", action="store_true")
    return parser


def selector_of(args: argparse.Namespace) -> pb.SeriesSelector | None:
    labels = dict(parse_label(t) for t in args.label)
    if args.key and (args.metric or labels):
        raise InputError("give either --key or --metric/--label, not both")
    if not (args.key or args.metric):
        if labels:
            raise InputError("--label needs --metric")
        if args.selector_required:
            raise InputError("name a series: --metric NAME [--label k=v ...] or --key KEY")
        return None
    return selector(metric=args.metric, labels=labels, key=args.key)


def required_selector(args: argparse.Namespace) -> pb.SeriesSelector:
    sel = selector_of(args)
    if sel is None:
        raise InputError("name a series: --metric NAME [--label k=v ...] or --key KEY")
    return sel


def write_json(write: Write, doc: Any) -> None:
    write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


async def cmd_series(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    items = await client.series(selector_of(args))
    if args.json:
        write_json(write, [render.to_json(s) for s in items])
    else:
        write(render.series_table(items))


async def cmd_adf(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    sel = required_selector(args)
    adf = await client.dickey_fuller(sel, parse_time(args.at) if args.at else None)
    if args.json:
        write_json(write, render.to_json(adf))
    else:
        write(f"{adf.series.key}\n" + render.indent(render.adf_block(adf)))


async def cmd_report(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    sel = required_selector(args)
    items = await client.series(sel)
    if not items:
        raise ClientError(grpc.StatusCode.NOT_FOUND, "no series matches; try the series command")
    await write_reports(client, items, write)


async def cmd_stream(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    """The pages of one stream merged per series, as tables or as a JSON array written
    series by series (memory holds one series, not the whole answer)."""
    method, field = STREAMS[args.command]
    sel = required_selector(args)
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    pages: AsyncIterator[Any] = getattr(client, method)(sel, time_range(start, end), args.limit)
    count = 0
    if args.json:
        write("[")
    async for msg in _per_series(pages, field):
        if args.json:
            doc = render.to_json(msg)
            doc.pop("next_page_token", None)
            write(("\n" if count == 0 else ",\n") + json.dumps(doc, ensure_ascii=False))
        else:
            write(_stream_text(args.command, msg))
        count += 1
    if args.json:
        write("\n]\n" if count else "]\n")


async def cmd_anomalies(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    start = parse_time(args.start) if args.start else None
    end = parse_time(args.end) if args.end else None
    statuses = [pb.AnomalyStatus.Value(f"ANOMALY_STATUS_{s}") for s in args.status]
    pages = client.anomalies(
        selector_of(args), args.detector, statuses, time_range(start, end), args.limit
    )
    items = [a async for page in pages for a in page.anomalies]
    if args.json:
        write_json(write, [render.to_json(a) for a in items])
    else:
        write(render.anomalies_table(items))


async def cmd_explain(client: RetrievalClient, args: argparse.Namespace, write: Write) -> None:
    anomalous = [(parse_time(a), parse_time(b)) for a, b in args.anomalous]
    reference = None
    if args.reference:
        reference = (parse_time(args.reference[0]), parse_time(args.reference[1]))
    answer = await client.explain(args.selector, anomalous, reference, args.step, args.max_ranked)
    if args.json:
        write_json(write, render.to_json(answer))
    else:
        write(render.explanation_block(answer, shown=args.max_ranked or render.SHOWN_RANKED))


async def _per_series(pages: AsyncIterator[Any], field: str) -> AsyncIterator[Any]:
    """Consecutive pages of one series merged into one message."""
    current: Any = None
    async for page in pages:
        if current is not None and current.series.key == page.series.key:
            getattr(current, field).extend(getattr(page, field))
            continue
        if current is not None:
            yield current
        current = page
    if current is not None:
        yield current


def _stream_text(command: str, msg: Any) -> str:
    head = f"\n{msg.series.key}\n"
    if command == "hp":
        return head + f"lambda {render.fmt_num(msg.hp_lambda)}\n" + render.hp_table(msg.points)
    if command == "decomposition":
        info = f"period {msg.period}, seasonal strength {render.fmt_num(msg.seasonal_strength)}"
        return head + info + "\n" + render.decomposition_table(msg.points)
    if command == "acf":
        return head + render.acf_table(msg.lags, msg.conf_bound)
    if command == "aggregates":
        return head + render.aggregates_table(msg.aggregates)
    summary = msg.summary if msg.HasField("summary") else None
    return head + render.forecast_block(summary, msg.points)


async def run(args: argparse.Namespace, settings: ClientSettings, write: Write) -> int:
    target = args.target or settings.grpc_target
    timeout = args.timeout or settings.grpc_timeout_s
    async with RetrievalClient(
        target,
        timeout_s=timeout,
        token=settings.api_token(),
        tls=settings.grpc_tls,
        tls_ca_file=settings.grpc_tls_ca_file,
    ) as client:
        command = args.command or "menu"
        if command == "menu":
            return await Menu(client, LineReader(sys.stdin.fileno()), write).run()
        if command == "series":
            await cmd_series(client, args, write)
        elif command == "adf":
            await cmd_adf(client, args, write)
        elif command == "report":
            await cmd_report(client, args, write)
        elif command == "anomalies":
            await cmd_anomalies(client, args, write)
        elif command == "explain":
            await cmd_explain(client, args, write)
        else:
            await cmd_stream(client, args, write)
    return 0


def main(argv: list[str] | None = None, write: Write = stdout_writer) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_and_logging(ClientSettings, log)
    if settings is None:
        return EXIT_BAD_SETTINGS
    if (args.command or "menu") == "menu":
        take_ctrl_c(sys.stdin.fileno())  # before asyncio.run, which then handles Ctrl-C
    try:
        return asyncio.run(run(args, settings, write))
    except InputError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    except ClientError as e:
        sys.stderr.write(f"error: {e.code.name}: {e.details}\n")
        return 1
    except KeyboardInterrupt:
        write("\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
