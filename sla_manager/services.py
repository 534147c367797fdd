"""The clients and stores one app instance uses; the routes reach them through
:mod:`sla_manager.deps`."""

from __future__ import annotations

from dataclasses import dataclass, field

from sla_common.mysql import connect
from sla_common.mysql_pool import ConnectionPool
from sla_manager.metrics import SlaMetrics
from sla_manager.settings import SlaSettings
from sla_manager.store import ForecastStore, SliStore


@dataclass
class Services:
    """What the routes use, created once per app (see :mod:`sla_manager.deps`)."""

    settings: SlaSettings
    metrics: SlaMetrics = field(default_factory=SlaMetrics)

    def __post_init__(self) -> None:
        s = self.settings
        self.pool = ConnectionPool(
            lambda: connect(s, autocommit=True),
            size=s.sla_mysql_pool_size,
            acquire_timeout_s=s.mysql_connect_timeout_s,
        )
        self.prometheus = s.prometheus_client()
        self.slis = SliStore(self.pool)
        self.forecasts = ForecastStore(self.pool)

    def close(self) -> None:
        self.pool.close()
        self.prometheus.close()
