"""Which series an SLI covers, and whether a range query over them is small enough: shared
by the evaluation routes and the violation explanation.

An SLI's series are those its selector returns (Prometheus), kept when they carry every
label of the SLI's ``labels`` with exactly that value, in label-set order, at most
SLA_MAX_SERIES of them. Before a range query fetches anything, an instant ``count by (<the
SLI's label names>)`` at its end says how many series it would return: more than
SLA_MAX_SERIES kept by the labels, or more than SLA_MAX_POINTS evaluations × series
fetched, is a 422 without the range query ever being sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

from sla_common.prometheus import InstantSample, PrometheusClient, RangeSeries
from sla_manager import evaluation as ev
from sla_manager.errors import validation_error
from sla_manager.models import Sli
from sla_manager.settings import SlaSettings

T = TypeVar("T", InstantSample, RangeSeries)


def labels_of(item: InstantSample | RangeSeries) -> Mapping[str, str]:
    return item.labels


def narrow(items: Sequence[T], sli: Sli, settings: SlaSettings) -> tuple[list[T], int]:
    """The SLI's series among a query's result: its labels filter, its order, its cap; and
    how many matched before the cap."""
    return ev.narrow(items, labels_of, sli.labels, settings.sla_max_series)


def check_range_size(
    prometheus: PrometheusClient, sli: Sli, at: float, evaluations: int, settings: SlaSettings
) -> None:
    """422 when the range query of ``evaluations`` steps ending at ``at`` would return too
    much (see the module doc)."""
    groups = prometheus.count(sli.selector, at, by=sorted(sli.labels))
    fetched = sum(int(g.value) for g in groups)
    kept = sum(
        int(g.value) for g in groups if all(g.labels.get(k) == v for k, v in sli.labels.items())
    )
    if kept > settings.sla_max_series:
        raise validation_error(
            ("path", "name"),
            f"the SLI's selector gives {kept} series at {at}, more than SLA_MAX_SERIES="
            f"{settings.sla_max_series}: narrow the selector or the SLI's labels",
            sli.name,
        )
    if evaluations * fetched > settings.sla_max_points:
        raise validation_error(
            ("query", "step"),
            f"{evaluations} evaluations × {fetched} series = {evaluations * fetched} points, "
            f"more than SLA_MAX_POINTS={settings.sla_max_points}: use a larger step, a "
            "shorter window or a narrower selector",
            None,
        )
