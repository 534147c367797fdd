"""Each threshold SLI's state and forecast breach probability, on the SLA manager's /metrics.

    sla_sli_inside{sli}               1: every series of the SLI inside its range now, 0: not
    sla_sli_breach_probability{sli}   probability that the SLI leaves its range within
                                      SLO_BREACH_HORIZON_S, from the stored forecasts
    sla_sli_forecast_age_seconds{sli} age of the freshest forecast used

The probability of one forecast point: P(below min) + P(above max) under the point's
predictive distribution as the ETL stored it (``loc``/``scale``, normal or Student-t,
censored at the domain's floor: :func:`sla_common.breach.point_breach_probabilities`, the
same function as ``GET /slis/{name}/forecast-violations``); a forecast stored without one
(an older ETL) is taken as normal, centred on the point forecast, with the spread of its 95 %
interval (σ = (upper95 − lower95) / 2·1.96). The SLI's is the largest over its series and
the points in the horizon: a lower bound of "leaves at least once", which assumes nothing
about how the errors of successive points correlate. Stale forecasts (older than two ETL
cycles) are left out, so an ETL that stopped does not freeze an alert on; so are forecasts
that are not of what the SLI evaluates (a counter's rate for an SLI on the raw counter).

The generated rules alert on it (``SliBreachPredicted``). Unlike a burn-rate alert, which
says the budget *is* burning, this one fires before the SLI leaves its range at all.

Scrapes never wait for MySQL or Prometheus: collect() answers from the last snapshot and,
when that is older than SLO_BREACH_REFRESH_S, starts one refresh in a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sla_common.series import series_key
from sla_manager import evaluation as ev
from sla_manager.evaluation import Bounds, FloatArray
from sla_manager.services import Services
from sla_manager.store import IntArray

log = logging.getLogger(__name__)

MAX_SLIS = 1000


def point_probabilities(
    bounds: Bounds, value: FloatArray, lower95: FloatArray, upper95: FloatArray
) -> FloatArray:
    """P(outside the range) of each point of a forecast without a stored distribution:
    the normal its 95 % interval gives (see the module doc)."""
    return ev.point_probabilities(bounds, ev.interval95_normal(value, lower95, upper95))


@dataclass(frozen=True)
class SliForecast:
    value: FloatArray
    lower95: FloatArray
    upper95: FloatArray
    # The stored distribution of the points (StoredForecast.predictive()); None: the
    # normal their 95 % intervals give.
    predictive: ev.Predictive | None = None

    def probabilities(self, bounds: Bounds) -> FloatArray:
        if self.predictive is None:
            return point_probabilities(bounds, self.value, self.lower95, self.upper95)
        return ev.point_probabilities(bounds, self.predictive)


def breach_probability(bounds: Bounds, forecasts: Iterable[SliForecast]) -> float | None:
    """The largest point probability over the series' forecasts; None without any point."""
    best: float | None = None
    for f in forecasts:
        if len(f.value) == 0:
            continue
        p = float(np.max(f.probabilities(bounds)))
        best = p if best is None else max(best, p)
    return best


@dataclass(frozen=True)
class SliSnapshot:
    inside: float | None
    probability: float | None
    forecast_age_s: float | None


@dataclass(eq=False)  # hashable by identity: the registry keeps collectors in a dict
class BreachExporter(Collector):
    """The collector; ``compute`` gives the SLI → snapshot map (I/O, run off the scrape)."""

    compute: Callable[[], dict[str, SliSnapshot]]
    refresh_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    _snapshot: dict[str, SliSnapshot] = field(default_factory=dict)
    _taken_at: float | None = None
    _running: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> None:
        try:
            snapshot = self.compute()
        except Exception as e:  # noqa: BLE001 (a scrape helper: log, keep the last snapshot)
            log.warning("SLI breach probabilities not refreshed: %s: %s", type(e).__name__, e)
            snapshot = None
        with self._lock:
            if snapshot is not None:
                self._snapshot = snapshot
            self._taken_at = self.clock()
            self._running = False

    def _maybe_refresh(self) -> None:
        with self._lock:
            due = self._taken_at is None or self.clock() - self._taken_at >= self.refresh_s
            if not due or self._running:
                return
            self._running = True
        threading.Thread(target=self.refresh, name="sli-breach-refresh", daemon=True).start()

    def describe(self) -> Iterator[Metric]:
        yield from self._families({})

    def collect(self) -> Iterator[Metric]:
        self._maybe_refresh()
        with self._lock:
            snapshot = dict(self._snapshot)
        yield from self._families(snapshot)

    @staticmethod
    def _families(snapshot: dict[str, SliSnapshot]) -> Iterator[Metric]:
        inside = GaugeMetricFamily(
            "sla_sli_inside",
            "1 when every series of the SLI is inside its range now",
            labels=["sli"],
        )
        prob = GaugeMetricFamily(
            "sla_sli_breach_probability",
            "Probability that the SLI leaves its range within the forecast horizon",
            labels=["sli"],
        )
        age = GaugeMetricFamily(
            "sla_sli_forecast_age_seconds",
            "Age of the forecast behind the probability",
            labels=["sli"],
        )
        for name, s in sorted(snapshot.items()):
            if s.inside is not None:
                inside.add_metric([name], s.inside)
            if s.probability is not None:
                prob.add_metric([name], s.probability)
            if s.forecast_age_s is not None:
                age.add_metric([name], s.forecast_age_s)
        yield inside
        yield prob
        yield age


def compute_snapshot(services: Services) -> dict[str, SliSnapshot]:
    """Every SLI's snapshot, from Prometheus (its series now) and MySQL (their forecasts)."""
    s = services.settings
    now = time.time()
    out: dict[str, SliSnapshot] = {}
    for sli in services.slis.list(MAX_SLIS):
        current, _total = ev.narrow(
            services.prometheus.query(sli.selector, time=now),
            lambda item: item.labels,
            sli.labels,
            s.sla_max_series,
        )
        bounds = sli.bounds()
        values = np.array([c.value for c in current], dtype=np.float64)
        inside = None if len(values) == 0 else float(not bounds.outside(values).any())
        keys = []
        for c in current:
            metric = c.labels.get("__name__")
            labels = {k: v for k, v in c.labels.items() if k != "__name__"}
            keys.append(series_key(metric or sli.selector, labels))
        stored = services.forecasts.load(keys, now, now + s.slo_breach_horizon_s)
        fresh = [
            f
            for f in stored.values()
            if f.produced_at is not None
            and now - f.produced_at <= s.stale_after_s
            and ev.forecast_incomparable(sli.selector, f.transform, f.selector) is None
        ]
        probability = breach_probability(
            bounds, (SliForecast(f.value, f.lower95, f.upper95, f.predictive()) for f in fresh)
        )
        newest = max((f.produced_at for f in fresh if f.produced_at is not None), default=None)
        out[sli.name] = SliSnapshot(
            inside=inside,
            probability=probability,
            forecast_age_s=None if newest is None else now - newest,
        )
    return out


@dataclass(frozen=True)
class BadFraction:
    """The fraction of the coming evaluations expected outside the range, and its bounds."""

    expected: float  # mean over timestamps of the largest point probability
    low: float  # timestamps where some series' whole 95 % interval is outside
    high: float  # timestamps where some series' 95 % interval reaches outside
    points: int  # forecast timestamps


def bad_fraction(
    bounds: Bounds, forecasts: Iterable[tuple[IntArray, SliForecast]]
) -> BadFraction | None:
    """Per forecast timestamp an evaluation is bad when any series is outside; over the
    series of one timestamp the largest point probability stands for it (a lower bound,
    as for the breach probability). None without any forecast point."""
    expected: dict[int, float] = {}
    low: dict[int, bool] = {}
    high: dict[int, bool] = {}
    for ts, f in forecasts:
        if len(ts) == 0:
            continue
        p = f.probabilities(bounds)
        whole_out = bounds.below(f.upper95) | bounds.above(f.lower95)
        reaches = bounds.below(f.lower95) | bounds.above(f.upper95) | bounds.outside(f.value)
        for t, pi, w, r in zip(
            ts.tolist(), p.tolist(), whole_out.tolist(), reaches.tolist(), strict=True
        ):
            expected[t] = max(expected.get(t, 0.0), pi)
            low[t] = low.get(t, False) or bool(w)
            high[t] = high.get(t, False) or bool(r)
    if not expected:
        return None
    n = len(expected)
    return BadFraction(
        expected=sum(expected.values()) / n,
        low=sum(low.values()) / n,
        high=sum(high.values()) / n,
        points=n,
    )
