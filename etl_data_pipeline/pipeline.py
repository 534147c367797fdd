"""One ETL cycle: fetch every selector's series from Prometheus, analyse, publish to Kafka.

A cycle succeeds only when every message it built was acknowledged by the broker. When
Prometheus or the broker is down the cycle fails as a whole (logged, counted, retried
with backoff); consumers upsert, so messages of a failed cycle that did get through are
harmless and the next cycle republishes everything. A selector Prometheus rejects, a
series whose analysis raises, or a message over the producer's size limit is logged and
counted, and the others go on.
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
from kafka.errors import KafkaError, MessageSizeTooLargeError

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
    prepare,
)
from etl_data_pipeline.counters import (
    MetricType,
    TypeSource,
    classify,
    metadata_names,
    parse_plain_selector,
)
from etl_data_pipeline.metrics import EtlMetrics
from etl_data_pipeline.settings import EtlSettings
from sla_common import messages as m
from sla_common.kafka import close_producer, ensure_topics, make_producer
from sla_common.prometheus import (
    PrometheusClient,
    PrometheusError,
    PrometheusUnavailable,
    RangeSeries,
)
from sla_common.series import series_key, shard_of

log = logging.getLogger(__name__)


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
    empty_selectors: tuple[str, ...] = ()  # configured selectors that matched nothing

    @property
    def nothing_matched(self) -> str | None:
        """Why nothing was published when no selector matched a series (None otherwise)."""
        if self.published or self.failed_series or not self.empty_selectors:
            return None
        if self.selector_errors:
            return (
                f"no series published: {len(self.empty_selectors)} selector(s) matched "
                f"nothing and {len(self.selector_errors)} failed"
            )
        return (
            f"no series published: no selector matched any series in the window "
            f"({self.start}, {self.end}] ({', '.join(self.empty_selectors)})"
        )


def analysis_config(s: EtlSettings) -> AnalysisConfig:
    return AnalysisConfig(
        hp_lambda=s.hp_lambda,
        acf_nlags=s.etl_acf_nlags,
        adf_maxlag=s.etl_adf_maxlag,
        adf_autolag=None if s.etl_adf_autolag == "none" else s.etl_adf_autolag,
        adf_regression=s.etl_adf_regression,
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
            regression=a.regression,
        )
    if isinstance(result.hp, HpResult):
        hp = m.Hp(
            lamb=result.hp.lamb,
            cutoff_period_s=round(result.hp.cutoff_period_s, 3),
            trend=_floats(result.hp.trend),
            cycle=_floats(result.hp.cycle),
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
    # counters were fetched as Prometheus' rate() already (Pipeline.fetch)
    return analyse(prepare(fs.timestamps, fs.values, step_s), end, cfg)


class _MetadataCache:
    """Metric types from Prometheus' metadata, one request per family name per cycle."""

    def __init__(self, prometheus: PrometheusClient) -> None:
        self.prometheus = prometheus
        self.known: dict[str, str] = {}
        self.asked: set[str] = set()
        self.broken = False

    def types(self, metric: str) -> dict[str, str]:
        for family in sorted(metadata_names(metric) - self.asked):
            self.asked.add(family)
            if self.broken:
                continue
            try:
                self.known.update(self.prometheus.metadata(family))
            except PrometheusError as e:
                # Prometheus-compatible stores without the endpoint: the suffix rule decides
                log.warning("no metric metadata from Prometheus (%s); typing by name", e)
                self.broken = True
        return self.known


def connect_producer(s: EtlSettings) -> Any:
    """The ETL's producer, once its topics exist; raises KafkaError when the broker is down."""
    ensure_topics(
        s.kafka_bootstrap_servers,
        [s.kafka_topic, s.kafka_dlq_topic],
        partitions=s.kafka_partitions,
        max_message_bytes=s.kafka_max_message_bytes,
    )
    return make_producer(
        s.kafka_bootstrap_servers,
        "etl_data_pipeline",
        compression=s.kafka_compression,
        max_request_size=s.kafka_max_message_bytes,
    )


class Pipeline:
    """Owns the Prometheus client and the (lazily connected) Kafka producer.

    ``prometheus`` and ``connect`` (which returns a new producer) default to the real
    ones; tests pass fakes to drive each fault branch deterministically.
    """

    def __init__(
        self,
        settings: EtlSettings,
        metrics: EtlMetrics | None = None,
        clock: Callable[[], float] = time.time,
        *,
        prometheus: PrometheusClient | None = None,
        connect: Callable[[EtlSettings], Any] = connect_producer,
    ) -> None:
        self.s = settings
        self.metrics = metrics or EtlMetrics()
        self.clock = clock
        self.cfg = analysis_config(settings)
        self.prometheus = prometheus or PrometheusClient(
            settings.prometheus_url, settings.prometheus_timeout_s
        )
        self._new_producer = connect
        self._producer: Any = None
        self._cycle_max: dict[str, float] = {}
        self.empty: list[str] = []  # selectors that matched nothing in the last fetch

    # ------------------------------------------------------------------ fetch

    def fetch(self, start: int, end: int) -> tuple[list[FetchedSeries], list[str]]:
        """All series of all selectors (deduplicated, this worker's shard only).

        Counters come as Prometheus' ``rate()`` at each step (see :mod:`counters`).
        Selectors that matched nothing are counted, logged and kept in ``self.empty``.
        Raises PrometheusUnavailable when Prometheus is down: the cycle cannot go on.
        """
        seen: dict[str, FetchedSeries] = {}
        errors: list[str] = []
        self.empty = []
        metadata = _MetadataCache(self.prometheus)
        for selector in self.s.etl_selectors:
            try:
                result = self.prometheus.query_range(selector, start, end, self.s.etl_step_s)
                if not result:
                    log.warning("selector %r matched no series in (%d, %d]", selector, start, end)
                    self.metrics.selectors_empty.labels(selector).inc()
                    self.empty.append(selector)
                    continue
                kept = self._keep(selector, result, seen, metadata)
                self._counters_as_rates(selector, kept, start, end)
            except PrometheusError as e:
                log.error("selector %r rejected by Prometheus: %s", selector, e)
                self.metrics.selector_errors.inc()
                errors.append(f"{selector}: {e}")
                continue
            for fs in kept:
                seen[fs.ref.key] = fs
        return list(seen.values()), errors

    def _keep(
        self,
        selector: str,
        result: list[RangeSeries],
        seen: dict[str, FetchedSeries],
        metadata: _MetadataCache,
    ) -> list[FetchedSeries]:
        """This worker's new series of one selector, typed (counter/gauge) and capped."""
        plain = parse_plain_selector(selector)
        kept: list[FetchedSeries] = []
        keys: set[str] = set()
        for rs in sorted(result, key=lambda r: sorted(r.labels.items())):
            metric = rs.metric or selector
            labels = {k: v for k, v in rs.labels.items() if k != "__name__"}
            key = series_key(metric, labels)
            if key in seen or key in keys:
                continue  # matched by an earlier selector too
            if shard_of(key, self.s.etl_shard_count) != self.s.etl_shard_index:
                continue
            if len(kept) >= self.s.etl_max_series_per_selector:
                log.warning(
                    "selector %r matches more than %d series; the rest are ignored "
                    "(raise ETL_MAX_SERIES_PER_SELECTOR or narrow the selector)",
                    selector,
                    self.s.etl_max_series_per_selector,
                )
                break
            mtype: MetricType
            source: TypeSource
            if plain is None or rs.metric is None:
                mtype, source = "unknown", "expression"
            else:
                mtype, source = classify(metric, metadata.types(metric))
            rate = mtype == "counter" and self.s.etl_counter_mode == "rate"
            ref = m.SeriesRef(
                key=key,
                metric=metric,
                labels=labels,
                selector=selector,
                transform="rate" if rate else "none",
                metric_type=mtype,
                type_source=source,
                rate_window_s=self.s.rate_window_s if rate else None,
            )
            kept.append(FetchedSeries(ref, rs.timestamps, rs.values))
            keys.add(key)
        return kept

    def _counters_as_rates(
        self, selector: str, kept: list[FetchedSeries], start: int, end: int
    ) -> None:
        """Replace each counter's samples by ``rate()`` at every step, one query per name."""
        plain = parse_plain_selector(selector)
        names = sorted({fs.ref.metric for fs in kept if fs.ref.transform == "rate"})
        if plain is None or not names:
            return
        window = self.s.rate_window_s
        for name in names:
            rates = {
                series_key(name, dict(rs.labels)): rs
                for rs in self.prometheus.query_range(
                    plain.rate(name, window), start, end, self.s.etl_step_s
                )
            }
            for i, fs in enumerate(kept):
                if fs.ref.transform == "rate" and fs.ref.metric == name:
                    rs = rates.get(fs.ref.key)
                    # no rate where fewer than two samples fall in any window: nothing left
                    ts = rs.timestamps if rs is not None else np.array([], dtype=np.float64)
                    vs = rs.values if rs is not None else np.array([], dtype=np.float64)
                    kept[i] = FetchedSeries(fs.ref, ts, vs)

    # ------------------------------------------------------------------ publish

    def _connect(self) -> Any:
        if self._producer is None:
            self._producer = self._new_producer(self.s)
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
            self.metrics.series_analysed.inc()
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
        if report.ok and report.nothing_matched:
            log.warning("cycle %s: %s", run_id, report.nothing_matched)
        elif report.ok:
            log.info(
                "cycle %s ok: window end %d, %d series published, %d failed, "
                "%d selector errors, %d selectors matched nothing in %.2fs",
                run_id,
                report.end,
                report.published,
                report.failed_series,
                len(report.selector_errors),
                len(report.empty_selectors),
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
                empty_selectors=tuple(self.empty),
            )

        if not series:  # nothing to publish: the broker is not needed this cycle
            return CycleReport(
                run_id,
                start,
                end,
                ok=True,
                selector_errors=tuple(selector_errors),
                empty_selectors=tuple(self.empty),
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
                empty_selectors=tuple(self.empty),
            )
        futures = []
        error: str | None = None
        try:
            for msg in self._messages(run_id, series, start, end, failed):
                value = msg.to_bytes()
                try:
                    futures.append(
                        producer.send(self.s.kafka_topic, key=msg.kafka_key(), value=value)
                    )
                except MessageSizeTooLargeError:  # refused before sending: only this series
                    log.error(
                        "the message of %s is %d bytes, over KAFKA_MAX_MESSAGE_BYTES=%d: not "
                        "published (shorten ETL_WINDOW_S or raise the limit, on the topics too)",
                        msg.series.key,
                        len(value),
                        self.s.kafka_max_message_bytes,
                    )
                    self.metrics.series_failed.inc()
                    failed.append(msg.series.key)
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
            empty_selectors=tuple(self.empty),
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
