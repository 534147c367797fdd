"""Prometheus for the batch job: which series the selectors give (the driver), and one
series' history (an executor), each retried while Prometheus is unavailable.

Only :class:`~sla_common.prometheus.PrometheusUnavailable` (down, timed out, 5xx) and
:class:`~sla_common.prometheus.PrometheusBusy` are retried, ``BATCH_FETCH_ATTEMPTS`` times
with exponential backoff from ``BATCH_FETCH_BACKOFF_S``; a rejected query is not.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from anomaly_detection.batch.core import Skip
from anomaly_detection.batch.settings import BatchSettings
from anomaly_detection.batch.store import SeriesRef
from sla_common.mysql import Backoff, retry
from sla_common.prometheus import PrometheusBusy, PrometheusClient, PrometheusUnavailable
from sla_common.promql import parse_plain_selector
from sla_common.series import exact_selector

log = logging.getLogger(__name__)

RETRIED = (PrometheusUnavailable, PrometheusBusy)


def client(s: BatchSettings) -> PrometheusClient:
    return PrometheusClient(s.prometheus_url, s.prometheus_timeout_s)


def _backoff(s: BatchSettings) -> Backoff:
    return Backoff(base_s=s.batch_fetch_backoff_s, cap_s=max(30.0, s.batch_fetch_backoff_s))


@dataclass
class Discovered:
    series: list[SeriesRef] = field(default_factory=list)
    skips: list[dict[str, str]] = field(default_factory=list)
    truncated: int = 0


def discover(s: BatchSettings, c: PrometheusClient, start: float, end: float) -> Discovered:
    """The series of ``BATCH_SELECTORS`` with samples in [start, end], each once, in key
    order, at most ``BATCH_MAX_SERIES``; a selector matching none is a ``no_match`` skip."""
    out = Discovered()
    seen: dict[str, SeriesRef] = {}
    for sel in s.batch_selectors:
        if parse_plain_selector(sel) is None:
            out.skips.append(_skip(sel, Skip("not_a_selector", "not a plain series selector")))
            continue
        found = retry(
            lambda sel=sel: c.series(sel, start, end),  # type: ignore[misc]
            what=f"listing the series of {sel}",
            retry_on=RETRIED,
            backoff=_backoff(s),
            max_attempts=s.batch_fetch_attempts,
        )
        if not found:
            out.skips.append(_skip(sel, Skip("no_match", "the selector matched no series")))
            continue
        for labels in found:
            ref = SeriesRef.of(labels)
            seen.setdefault(ref.key, ref)
    refs = [seen[k] for k in sorted(seen)]
    if len(refs) > s.batch_max_series:
        out.truncated = len(refs) - s.batch_max_series
        log.warning(
            "%d series, more than BATCH_MAX_SERIES=%d: the last %d (in key order) left out",
            len(refs),
            s.batch_max_series,
            out.truncated,
        )
        refs = refs[: s.batch_max_series]
    out.series = refs
    return out


def _skip(selector: str, skip: Skip) -> dict[str, str]:
    return {"selector": selector, "reason": skip.reason, "detail": skip.detail}


def history(
    s: BatchSettings, c: PrometheusClient, ref: SeriesRef, start: float, end: float, step: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The points of exactly this series in [start, end] at ``step`` (empty if none)."""
    want = ref.prometheus_labels()
    found = retry(
        lambda: c.query_range(exact_selector(want), start, end, step),
        what=f"fetching {ref.key}",
        retry_on=RETRIED,
        backoff=_backoff(s),
        max_attempts=s.batch_fetch_attempts,
    )
    for r in found:
        if dict(r.labels) == want:
            return r.timestamps, r.values
    return np.zeros(0), np.zeros(0)
