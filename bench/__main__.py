"""``python -m bench [analyses|kafka|storage|retrieval|sla|e2e|explain|receiver|detector|
detector-scale|detector-normal|nab|outliers|pages|burndown|batch ...]``: run the
benchmarks (``detector`` includes ``detector-scale``).

Kafka benchmarks use KAFKA_BOOTSTRAP_SERVERS, storage ones MYSQL_* too (``make bench``
starts the local stack and sources its stack.env first). Results go to
bench/results/<UTC timestamp>.json; copy the figures into BENCHMARKS.md with the machine
and date.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import (
    bench_analyses,
    bench_batch,
    bench_burndown,
    bench_detector,
    bench_detector_scale,
    bench_e2e,
    bench_explain,
    bench_forecast,
    bench_kafka,
    bench_nab,
    bench_outliers,
    bench_pages,
    bench_receiver,
    bench_retrieval,
    bench_season,
    bench_sla,
    bench_slo,
    bench_storage,
)


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "which",
        nargs="*",
        default=[
            "analyses",
            "forecast",
            "kafka",
            "storage",
            "retrieval",
            "sla",
            "slo",
            "detector",
            "e2e",
            "explain",
        ],
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"machine": machine()}
    if "analyses" in args.which:
        results["analyses"] = bench_analyses.measure(args.repeats)
        a = results["analyses"]
        print(
            f"analyses: ours {a['ours']['series_per_s_median']:.1f} series/s "
            f"({a['ours']['series_per_cpu_s_median']:.1f}/CPU-s), baseline "
            f"{a['baseline']['series_per_s_median']:.2f} series/s, ratio {a['speed_ratio']:.1f}x; "
            f"MASE median ours {a['ours']['mase_median']:.3f} vs baseline "
            f"{a['baseline']['mase_median']:.3f} "
            f"(baseline forecast failures {a['baseline']['forecast_failures']}/{a['cases']}); "
            f"ours more accurate on {100 * a['ours_more_accurate_fraction']:.0f}% of cases"
        )
        print("  time per analysis (median ms):", json.dumps(a["where_time_goes_ms"]))
    if "forecast" in args.which:
        results["forecast"] = bench_forecast.measure()
        print(bench_forecast.summary(results["forecast"]))
    if "kafka" in args.which:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        results["kafka"] = bench_kafka.measure(bootstrap, args.repeats)
        print(bench_kafka.summary(results["kafka"]))
    if "storage" in args.which:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        results["storage"] = st = bench_storage.measure(bootstrap, args.repeats)
        d = st["drain"]
        print(
            f"storage: batched upserts {st['batched_rows_per_s_median']:.0f} rows/s, naive "
            f"insert+commit per row {st['naive_rows_per_s_median']:.0f} rows/s, ratio "
            f"{st['ratio']:.1f}x; backlog of {d['messages']} small messages drained in "
            f"{d['drain_s']:.1f} s ({d['until_first_commit_s']:.1f} s to the first commit, "
            f"then {d['messages_per_s_after_first_commit']:.0f} msg/s, "
            f"{d['rows_per_s_after_first_commit']:.0f} rows/s), "
            f"peak RSS {d['peak_rss_mib']:.0f} MiB"
        )
    if "retrieval" in args.which:
        results["retrieval"] = bench_retrieval.measure(args.repeats)
        print(bench_retrieval.summary(results["retrieval"]))
    if "sla" in args.which:
        results["sla"] = bench_sla.measure(args.repeats)
        print(bench_sla.summary(results["sla"]))
    if "receiver" in args.which:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        results["receiver"] = bench_receiver.measure(bootstrap, args.repeats)
        print(bench_receiver.summary(results["receiver"]))
    if "slo" in args.which:
        results["slo"] = bench_slo.measure(args.repeats)
        print(bench_slo.summary(results["slo"]))
    if "burndown" in args.which:
        results["burndown"] = bench_burndown.measure(max(args.repeats, 5))
        print(bench_burndown.summary(results["burndown"]))
    if "detector" in args.which:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        results["detector"] = bench_detector.measure(bootstrap, args.repeats)
        print(bench_detector.summary(results["detector"]))
    if "detector" in args.which or "detector-scale" in args.which:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
        results["detector_scale"] = bench_detector_scale.measure(bootstrap, args.repeats)
        print(bench_detector_scale.summary(results["detector_scale"]))
    if "detector-normal" in args.which:
        results["detector_normal"] = bench_season.measure(max(args.repeats, 5))
        print(bench_season.summary(results["detector_normal"]))
    if "e2e" in args.which:
        results["e2e"] = bench_e2e.measure(args.repeats)
        print(bench_e2e.summary(results["e2e"]))
    if "explain" in args.which:
        results["explain"] = bench_explain.measure(args.repeats)
        print(bench_explain.summary(results["explain"]))
    if "pages" in args.which:
        results["pages"] = bench_pages.measure(max(args.repeats, 7))
        print(bench_pages.summary(results["pages"]))
    if "outliers" in args.which:
        results["outliers"] = bench_outliers.measure(args.repeats)
        print(bench_outliers.summary(results["outliers"]))
    if "batch" in args.which:
        results["batch"] = bench_batch.measure()
        print(bench_batch.summary(results["batch"]))
    if "nab" in args.which:
        results["nab"] = bench_nab.measure()
        print(bench_nab.summary(results["nab"]))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / time.strftime("%Y%m%dT%H%M%SZ.json", time.gmtime())
    path.write_text(json.dumps(results, indent=2))
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
