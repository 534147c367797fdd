"""One ETL cycle: fetch every selector's series from Prometheus, analyse, publish to Kafka.

A cycle succeeds only when every message it built was acknowledged by the broker. When
Prometheus or the broker is down the cycle fails as a whole (logged, counted, retried
with backoff); consumers upsert, so messages of a failed cycle that did get through are
harmless and the next cycle republishes everything. A selector Prometheus rejects, or a
series whose analysis raises, is logged and counted, and the others go on.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from kafka.errors import KafkaError

from etl_data_pipeline.analyses import (
    AcfResult,
    AdfResult,
    AnalysisConfig,
    DecompositionResult,
    ForecastResult,
    HpResult,
    SeriesAnalysis,
    WindowAggregate,
    analyse,
    counter_to_rate,
    prepare,
)
from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.settings import EtlSettings
from sla_common import messages as m
from sla_common.kafka import close_producer, ensure_topics, make_producer
from sla_common.prometheus import PrometheusClient, PrometheusError, PrometheusUnavailable
from sla_common.series import series_key, shard_of

log = logging.getLogger(__name__)

COUNTER_SUFFIX = "_total"


@dataclass(frozen=True)
class FetchedSeries:
    ref: m.SeriesRef
    timestamps: np.ndarray[Any, np.dtype[np.float64]]
    values: np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class CycleReport:
    run_id: str
    start: int
    end: int
    ok: bool
    published: int = 0
    failed_series: int = 0
    selector_errors: tuple[str, ...] = ()
    error: str | None = None
    duration_s: float = 0.0


def analysis_config(s: EtlSettings) -> AnalysisConfig:
    return AnalysisConfig(
        hp_lambda=s.etl_hp_lambda,
        acf_nlags=s.etl_acf_nlags,
        adf_maxlag=s.etl_adf_maxlag,
        adf_autolag=None if s.etl_adf_autolag == "none" else s.etl_adf_autolag,
        season_s=s.etl_season_s,
        forecast_horizon_s=s.etl_forecast_horizon_s,
        forecast_step_s=s.etl_forecast_step_s,
    )


def _floats(a: np.ndarray[Any, Any]) -> list[float]:
    return [float(v) for v in a.tolist()]


def _forecast_message(f: ForecastResult, horizon_s: int) -> m.Forecast:
    """The forecast with its predictive distribution (loc/scale per point) when it has one."""
    n = f.timestamps.size
    loc = f.loc.tolist() if f.loc is not None else [None] * n
    scale = f.scale.tolist() if f.scale is not None else [None] * n
    return m.Forecast(
        model=f.model,
        step_s=f.step_s,
        horizon_s=horizon_s,
        history_points=f.history_points,
        points=[
            m.ForecastPoint(
                ts=int(t), value=v, lower80=l8, upper80=u8, lower95=l9, upper95=u9, loc=lc, scale=sc
            )
            for t, v, l8, u8, l9, u9, lc, sc in zip(
                f.timestamps.tolist(),
                f.mean.tolist(),
                f.lower80.tolist(),
                f.upper80.tolist(),
                f.lower95.tolist(),
                f.upper95.tolist(),
                loc,
                scale,
                strict=True,
            )
        ],
        max=f.max,
        min=f.min,
        mean=f.avg,
        distribution=None if f.scale is None else ("normal" if f.df is None else "student_t"),
        df=f.df,
        floor=f.floor,
    )


def build_message(
    run_id: str,
    produced_at: int,
    ref: m.SeriesRef,
    start: int,
    end: int,
    result: SeriesAnalysis,
    horizon_s: int,
) -> m.AnalysisMessage:
    """Pure: turn one series' analyses into the versioned message (validated on build)."""
    p = result.prepared
    grid = m.Grid(start=int(p.timestamps[0]) if p.n else start, step_s=p.step_s, count=p.n)
    adf = hp = acf = dec = fc = None
    if isinstance(result.adf, AdfResult):
        a = result.adf
        adf = m.Adf(
            statistic=a.statistic,
            pvalue=a.pvalue,
            used_lag=a.used_lag,
            nobs=a.nobs,
            critical_values=m.CriticalValues.model_validate(a.critical_values),
            stationary=a.stationary,
            autolag=a.autolag,
        )
    if isinstance(result.hp, HpResult):
        hp = m.Hp(
            lamb=result.hp.lamb, trend=_floats(result.hp.trend), cycle=_floats(result.hp.cycle)
        )
    if isinstance(result.acf, AcfResult):
        acf = m.Acf(values=_floats(result.acf.values), conf_bound=result.acf.conf_bound)
    if isinstance(result.decomposition, DecompositionResult):
        d = result.decomposition
        dec = m.Decomposition(
            period=d.period,
            seasonal_strength=min(1.0, d.seasonal_strength),
            trend=_floats(d.trend),
            seasonal=_floats(d.seasonal),
            resid=_floats(d.resid),
        )
    if isinstance(result.forecast, ForecastResult):
        fc = _forecast_message(result.forecast, horizon_s)
    aggs = [
        m.Aggregate(
            window=w.window,
            start=w.start,
            end=w.end,
            count=w.count,
            max=w.max,
            min=w.min,
            mean=w.mean,
            std=w.std,
        )
        for w in result.aggregates
        if isinstance(w, WindowAggregate)
    ]
    return m.AnalysisMessage(
        run_id=run_id,
        produced_at=produced_at,
        series=ref,
        window=m.Window(
            start=start,
            end=end,
            step_s=p.step_s,
            samples=int(p.raw_values.size),
            interpolated=p.interpolated,
        ),
        grid=grid,
        adf=adf,
        hp=hp,
        acf=acf,
        decomposition=dec,
        aggregates=aggs,
        forecast=fc,
        skipped=[
            m.SkippedAnalysis(analysis=s.analysis, reason=s.reason, detail=s.detail)
            for s in result.skipped
        ],
        durations_ms={k: v * 1000.0 for k, v in result.durations_s.items()},
    )


def analyse_series(fs: FetchedSeries, step_s: int, end: int, cfg: AnalysisConfig) -> SeriesAnalysis:
    ts, vs = fs.timestamps, fs.values
    if fs.ref.transform == "rate":
        ts, vs = counter_to_rate(ts, vs)  # type: ignore[assignment]
    return analyse(prepare(ts, vs, step_s), end, cfg)


class Pipeline:
    """Owns the Prometheus client and the (lazily connected) Kafka producer."""

    def __init__(
        self,
        settings: EtlSettings,
        metrics: EtlMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.s = settings
        self.metrics = metrics or EtlMetrics()
        self.clock = clock
        self.cfg = analysis_config(settings)
        self.prometheus = PrometheusClient(settings.prometheus_url, settings.prometheus_timeout_s)
        self._producer: Any = None
        self._cycle_max: dict[str, float] = {}

    # ------------------------------------------------------------------ fetch

    def fetch(self, start: int, end: int) -> tuple[list[FetchedSeries], list[str]]:
        """All series of all selectors (deduplicated, this worker's shard only).

        Raises PrometheusUnavailable when Prometheus is down: the cycle cannot go on.
        """
        seen: dict[str, FetchedSeries] = {}
        errors: list[str] = []
        for selector in self.s.etl_selectors:
            try:
                result = self.prometheus.query_range(selector, start, end, self.s.etl_step_s)
            except PrometheusError as e:
                log.error("selector %r rejected by Prometheus: %s", selector, e)
                self.metrics.selector_errors.inc()
                errors.append(f"{selector}: {e}")
                continue
            kept = 0
            for rs in sorted(result, key=lambda r: sorted(r.labels.items())):
                metric = rs.metric or selector
                labels = {k: v for k, v in rs.labels.items() if k != "__name__"}
                key = series_key(metric, labels)
                if key in seen:
                    continue  # matched by an earlier selector too
                if shard_of(key, self.s.etl_shard_count) != self.s.etl_shard_index:
                    continue
                if kept >= self.s.etl_max_series_per_selector:
                    log.warning(
                        "selector %r matches more than %d series; the rest are ignored "
                        "(raise ETL_MAX_SERIES_PER_SELECTOR or narrow the selector)",
                        selector,
                        self.s.etl_max_series_per_selector,
                    )
                    break
                transform = (
                    "rate"
                    if self.s.etl_counter_mode == "rate" and metric.endswith(COUNTER_SUFFIX)
                    else "none"
                )
                ref = m.SeriesRef(
                    key=key, metric=metric, labels=labels, selector=selector, transform=transform
                )
                seen[key] = FetchedSeries(ref, rs.timestamps, rs.values)
                kept += 1
        return list(seen.values()), errors

    # ------------------------------------------------------------------ publish

    def _connect(self) -> Any:
        if self._producer is None:
            ensure_topics(
                self.s.kafka_bootstrap_servers,
                [self.s.kafka_topic, self.s.kafka_dlq_topic],
                partitions=self.s.kafka_partitions,
            )
            self._producer = make_producer(
                self.s.kafka_bootstrap_servers,
                "etl_data_pipeline",
                compression_type=None
                if self.s.kafka_compression == "none"
                else self.s.kafka_compression,
            )
        return self._producer

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None and not close_producer(producer, 1.0):
            log.info("dropped the Kafka producer with unacknowledged records (the cycle failed)")

    def close(self) -> None:
        if self._producer is not None:
            try:
                self._producer.flush(timeout=self.s.kafka_flush_timeout_s)
            except KafkaError as e:
                log.warning("final flush failed: %s", e)
        self._drop_producer()
        self.prometheus.close()

    # ------------------------------------------------------------------ cycle

    def _messages(
        self, run_id: str, series: list[FetchedSeries], start: int, end: int, failed: list[str]
    ) -> Iterator[m.AnalysisMessage]:
        """Analyse lazily, so each message is sent (and its arrays freed) before the next."""
        for fs in series:
            try:
                result = analyse_series(fs, self.s.etl_step_s, end, self.cfg)
                msg = build_message(
                    run_id,
                    int(self.clock()),
                    fs.ref,
                    start,
                    end,
                    result,
                    self.s.etl_forecast_horizon_s,
                )
            except Exception:
                log.exception("analysis of %s failed; skipping it this cycle", fs.ref.key)
                self.metrics.series_failed.inc()
                failed.append(fs.ref.key)
                continue
            for name, seconds in result.durations_s.items():
                self.metrics.analysis_duration.labels(name).observe(seconds)
                self._cycle_max[name] = max(seconds, self._cycle_max.get(name, 0.0))
            for sk in result.skipped:
                self.metrics.analyses_skipped.labels(sk.analysis, sk.reason).inc()
            yield msg

    def run_cycle(self, end: int | None = None) -> CycleReport:
        t0 = time.perf_counter()
        run_id = uuid.uuid4().hex
        step = self.s.etl_step_s
        end = int(end if end is not None else self.clock()) // step * step
        start = end - self.s.etl_window_s
        self._cycle_max = {}
        report = self._run(run_id, start, end)
        report = dataclasses.replace(report, duration_s=time.perf_counter() - t0)
        self.metrics.cycle_duration.observe(report.duration_s)
        self.metrics.last_cycle_duration.set(report.duration_s)
        for name, seconds in self._cycle_max.items():
            self.metrics.analysis_cycle_max.labels(name).set(seconds)
        if report.ok:
            self.metrics.cycles.labels("success").inc()
            self.metrics.last_success.set(self.clock())
            self.metrics.series_in_last_cycle.set(report.published)
            log.info(
                "cycle %s ok: window end %d, %d series published, %d failed, "
                "%d selector errors in %.2fs",
                run_id,
                report.end,
                report.published,
                report.failed_series,
                len(report.selector_errors),
                report.duration_s,
            )
        else:
            self.metrics.cycles.labels("failed").inc()
            # "published" counts records the broker acknowledged before the failure: those
            # are stored even though the cycle as a whole failed (the next cycle re-analyses).
            log.error(
                "cycle %s failed: window end %d, %d series published, after %.2fs: %s",
                run_id,
                report.end,
                report.published,
                report.duration_s,
                report.error,
            )
        return report

    def _run(self, run_id: str, start: int, end: int) -> CycleReport:
        t = time.perf_counter()
        try:
            series, selector_errors = self.fetch(start, end)
        except PrometheusUnavailable as e:
            return CycleReport(run_id, start, end, ok=False, error=f"Prometheus unavailable: {e}")
        finally:
            self.metrics.stage_duration.labels("fetch").observe(time.perf_counter() - t)
        if not series and selector_errors and len(selector_errors) == len(self.s.etl_selectors):
            return CycleReport(
                run_id,
                start,
                end,
                ok=False,
                selector_errors=tuple(selector_errors),
                error="every selector failed",
            )

        t = time.perf_counter()
        failed: list[str] = []
        try:
            producer = self._connect()
        except KafkaError as e:
            self._drop_producer()
            return CycleReport(
                run_id,
                start,
                end,
                ok=False,
                selector_errors=tuple(selector_errors),
                error=f"Kafka unavailable: {type(e).__name__}: {e}",
            )
        futures = []
        error: str | None = None
        try:
            for msg in self._messages(run_id, series, start, end, failed):
                futures.append(
                    producer.send(self.s.kafka_topic, key=msg.kafka_key(), value=msg.to_bytes())
                )
            producer.flush(timeout=self.s.kafka_flush_timeout_s)
        except KafkaError as e:
            error = f"publish failed: {type(e).__name__}: {e}"
            self._drop_producer()  # fails what is still unacknowledged, for good
        finally:
            self.metrics.stage_duration.labels("analyse_publish").observe(time.perf_counter() - t)
        acked = sum(1 for f in futures if f.is_done and f.succeeded())
        self.metrics.messages_published.inc(acked)
        if error is None and acked != len(futures):
            first = next((f.exception for f in futures if f.is_done and f.failed()), None)
            error = f"{len(futures) - acked} of {len(futures)} not acknowledged: {first}"
            self._drop_producer()
        return CycleReport(
            run_id,
            start,
            end,
            ok=error is None,
            published=acked,
            failed_series=len(failed),
            selector_errors=tuple(selector_errors),
            error=error,
        )

    # ------------------------------------------------------------------ loop

    def run_forever(self, stop: threading.Event) -> None:
        """Cycle every ETL_INTERVAL_S until ``stop`` is set; back off after failures."""
        failures = 0
        while not stop.is_set():
            started = time.monotonic()
            report = self.run_cycle()
            if report.ok:
                failures = 0
                wait = self.s.etl_interval_s - (time.monotonic() - started)
            else:
                failures += 1
                wait = min(self.s.etl_max_backoff_s, self.s.etl_interval_s, 2.0 ** (failures - 1))
                log.warning("retrying in %.0fs (failure %d in a row)", wait, failures)
            stop.wait(max(0.0, wait))
