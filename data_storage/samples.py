"""ETL-shaped messages for the storage tests and benchmarks (not used by the service).

:func:`analysed` runs the ETL's real analyses and message builder on a synthetic series,
so the messages have exactly the shape, sizes and value ranges production produces.
:func:`moved` re-labels such a message as another series and/or a later run (all times
shifted), which gives thousands of distinct, valid messages for the price of a few
analyses.
"""

from __future__ import annotations

import uuid

import numpy as np

from etl_data_pipeline.analyses import AnalysisConfig, analyse, prepare
from etl_data_pipeline.pipeline import build_message
from sla_common.messages import AnalysisMessage, SeriesRef
from sla_common.series import series_key


def ref(metric: str, **labels: str) -> SeriesRef:
    return SeriesRef(key=series_key(metric, labels), metric=metric, labels=labels, selector=metric)


def analysed(
    series: SeriesRef,
    end: int,
    *,
    points: int = 2881,
    step_s: int = 15,
    seed: int = 0,
    run_id: str | None = None,
    config: AnalysisConfig | None = None,
) -> AnalysisMessage:
    """The message the ETL would publish for a noisy daily-and-hourly gauge ending at ``end``.

    Defaults: the ETL's 12 h window at 15 s (2,881 points), every analysis present.
    """
    rng = np.random.default_rng(seed)
    ts = end - step_s * np.arange(points)[::-1]
    phase = rng.uniform(0, 2 * np.pi)
    values = (
        1e9
        + 5e7 * np.sin(2 * np.pi * ts / 86_400 + phase)
        + 1e7 * np.sin(2 * np.pi * ts / 3600)
        + rng.normal(0, 2e6, points)
    )
    cfg = config or AnalysisConfig()
    result = analyse(prepare(ts, values, step_s), end, cfg)
    start = end - (points - 1) * step_s
    return build_message(
        run_id or uuid.uuid4().hex, end, series, start, end, result, cfg.forecast_horizon_s
    )


def moved(
    msg: AnalysisMessage,
    *,
    series: SeriesRef | None = None,
    dt: int = 0,
    run_id: str | None = None,
    produced_at: int | None = None,
) -> AnalysisMessage:
    """``msg`` for another series and/or ``dt`` seconds later (a later run of the ETL)."""
    window = msg.window.model_copy(
        update={"start": msg.window.start + dt, "end": msg.window.end + dt}
    )
    grid = msg.grid.model_copy(update={"start": msg.grid.start + dt})
    aggregates = [
        a.model_copy(update={"start": a.start + dt, "end": a.end + dt}) for a in msg.aggregates
    ]
    forecast = None
    if msg.forecast is not None:
        points = [p.model_copy(update={"ts": p.ts + dt}) for p in msg.forecast.points]
        forecast = msg.forecast.model_copy(update={"points": points})
    return msg.model_copy(
        update={
            "series": series or msg.series,
            "run_id": run_id or msg.run_id,
            "produced_at": produced_at if produced_at is not None else msg.produced_at + dt,
            "window": window,
            "grid": grid,
            "aggregates": aggregates,
            "forecast": forecast,
        }
    )
