"""``/slos``: create, read, replace and delete SLOs (writes need the token); ``GET
/slos/{name}`` answers compliance, error budget, burn rates and time to exhaustion.

Every write regenerates the rule file and asks Prometheus to reload it; the answer's
``X-Rules-Status`` header says how that went (``reloaded``, ``written``, ``not_configured``,
``write_failed``, ``reload_failed``): the SLO itself is stored either way.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import (
    APIRouter,
    Depends,
    FastAPI,
    HTTPException,
    Path,
    Query,
    Request,
    Response,
    status,
)

from sla_common.prometheus import PrometheusClient
from sla_manager.deps import (
    ForecastStoreDep,
    PrometheusDep,
    ServicesDep,
    SettingsDep,
    SliStoreDep,
    WriteAccess,
)
from sla_manager.errors import AUTH, PROMQL, UNAVAILABLE, Responses, validation_error
from sla_manager.models import SLUG_PATTERN, ErrorBody, ListQuery
from sla_manager.services import Services
from sla_manager.slo.model import (
    AlertWindowOut,
    BudgetHistoryOut,
    BudgetHistoryQuery,
    Slo,
    SloAlertOut,
    SloCreate,
    SloSpec,
    SloStatus,
    SloStatusQuery,
)
from sla_manager.slo.publish import RulePublisher
from sla_manager.slo.rules import RuleSet, good_expr
from sla_manager.slo.status import ForecastSource, budget_history
from sla_manager.slo.status import status as slo_status
from sla_manager.slo.store import DuplicateSlo, SloStore
from sla_manager.store import SliStore

log = logging.getLogger(__name__)

SLO_NOT_FOUND: Responses = {404: {"model": ErrorBody, "description": "no SLO of that name"}}
SLO_CONFLICT: Responses = {409: {"model": ErrorBody, "description": "an SLO of that name exists"}}
RULES_STATUS = "X-Rules-Status"

_publisher_lock = threading.Lock()


def publisher_of(app: FastAPI) -> RulePublisher:
    """One publisher per app: its lock serialises the rule-file writes."""
    with _publisher_lock:
        publisher: RulePublisher | None = getattr(app.state, "slo_publisher", None)
        if publisher is None:
            publisher = RulePublisher(app.state.services.settings)
            app.state.slo_publisher = publisher
    return publisher


def _publish_at_start(app: FastAPI) -> None:
    services: Services = app.state.services
    try:
        store = SloStore(services.pool)
        result = publisher_of(app).publish(current_rules(store, services.slis, publisher_of(app)))
    except Exception as e:  # noqa: BLE001 (MySQL may still be starting: the next write retries)
        log.warning("SLO rules not written at start: %s: %s", type(e).__name__, e)
        return
    log.info("SLO rules at start: %s", result.status)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Write the rule file once at start (a new release may generate other rules, and a
    fresh rules volume has none), in the background: serving does not wait for it."""
    if app.state.services.settings.slo_rules_file is not None:
        threading.Thread(
            target=_publish_at_start, args=(app,), name="slo-rules-at-start", daemon=True
        ).start()
    yield


router = APIRouter(prefix="/slos", tags=["slos"], responses={**UNAVAILABLE}, lifespan=_lifespan)


async def get_slo_store(services: ServicesDep) -> SloStore:
    return SloStore(services.pool)


async def get_publisher(request: Request) -> RulePublisher:
    return publisher_of(request.app)


SloStoreDep = Annotated[SloStore, Depends(get_slo_store)]
PublisherDep = Annotated[RulePublisher, Depends(get_publisher)]
SloName = Annotated[str, Path(pattern=SLUG_PATTERN, description="the SLO's slug")]


def slo_or_404(store: SloStore, name: str) -> Slo:
    record = store.get(name)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLO named {name!r}")
    return record


def check_sli(spec: SloSpec, slis: SliStore, prometheus: PrometheusClient) -> None:
    """The SLI exists (else 422) and Prometheus accepts the queries the rules will evaluate
    (else 400 with Prometheus' words; 503 when it cannot be asked)."""
    if spec.sli is not None:
        sli = slis.get(spec.sli)
        if sli is None:
            raise validation_error(("body", "sli"), f"no SLI named {spec.sli!r}", spec.sli)
        prometheus.query(good_expr(sli))
    elif spec.ratio is not None:
        prometheus.query(spec.ratio.errors_at("5m"))
        prometheus.query(spec.ratio.total_at("5m"))


def current_rules(store: SloStore, slis: SliStore, publisher: RulePublisher) -> RuleSet:
    slos = store.all()
    found = {n: slis.get(n) for n in {s.sli for s in slos if s.sli is not None}}
    return publisher.render(slos, {n: s for n, s in found.items() if s is not None})


def republish(
    response: Response, store: SloStore, slis: SliStore, publisher: RulePublisher
) -> None:
    result = publisher.publish(current_rules(store, slis, publisher))
    response.headers[RULES_STATUS] = result.status


@router.get("", summary="List SLOs by name")
def list_slos(params: Annotated[ListQuery, Query()], store: SloStoreDep) -> list[Slo]:
    return store.list(params.limit, params.after)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an SLO (and regenerate the rules)",
    dependencies=[WriteAccess],
    responses={**AUTH, **PROMQL, **SLO_CONFLICT},
)
def create_slo(
    body: SloCreate,
    response: Response,
    store: SloStoreDep,
    slis: SliStoreDep,
    prometheus: PrometheusDep,
    publisher: PublisherDep,
) -> Slo:
    check_sli(body, slis, prometheus)
    try:
        record = store.create(body.name, body, int(time.time()))
    except DuplicateSlo:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"an SLO named {body.name!r} exists"
        ) from None
    log.info("SLO %s created: %s %% over %s", body.name, body.objective, body.period)
    response.headers["Location"] = f"/slos/{record.name}"
    republish(response, store, slis, publisher)
    return record


@router.get(
    "/{name}",
    summary="An SLO's compliance, error budget, burn rates and time to exhaustion",
    responses={**SLO_NOT_FOUND, **PROMQL},
)
def get_slo(
    name: SloName,
    params: Annotated[SloStatusQuery, Query()],
    store: SloStoreDep,
    slis: SliStoreDep,
    prometheus: PrometheusDep,
    forecasts: ForecastStoreDep,
    settings: SettingsDep,
) -> SloStatus:
    slo = slo_or_404(store, name)
    sli = slis.get(slo.sli) if slo.sli is not None else None
    found = slo_status(
        prometheus,
        slo,
        settings.slo_rule_config(),
        settings.slo_burn_rate_window,
        source=params.source,
        sli=sli,
        raw_step_s=settings.sla_violation_step_s,
        at=params.time,
        forecasts=ForecastSource(
            forecasts,
            settings.slo_breach_horizon_s,
            settings.stale_after_s,
            settings.sla_max_series,
        ),
    )
    config = settings.slo_rule_config()
    update: dict[str, object] = {
        "alert_windows": [
            AlertWindowOut(severity=w.severity, factor=w.factor, long=w.long, short=w.short)
            for w in config.windows
        ]
    }
    if params.alerts:
        update["alerts"] = _alerts(prometheus, slo.name, found.evaluated_at)
    return found.model_copy(update=update)


@router.get(
    "/{name}/budget-history",
    summary="The SLO's error budget left over its period (a burn-down)",
    description=(
        "The budget left at `points` times evenly spread over the period ending at `end`, "
        "each as `GET /slos/{name}?time=t` answers it (the error ratio over the period "
        "ending at t), from one range query."
    ),
    responses={**SLO_NOT_FOUND, **PROMQL},
)
def get_budget_history(
    name: SloName,
    params: Annotated[BudgetHistoryQuery, Query()],
    store: SloStoreDep,
    slis: SliStoreDep,
    prometheus: PrometheusDep,
    settings: SettingsDep,
) -> BudgetHistoryOut:
    slo = slo_or_404(store, name)
    sli = slis.get(slo.sli) if slo.sli is not None else None
    return budget_history(
        prometheus,
        slo,
        sli,
        source=params.source,
        raw_step_s=settings.sla_violation_step_s,
        end=params.end if params.end is not None else round(time.time(), 3),
        points=params.points,
    )


def _alerts(prometheus: PrometheusClient, name: str, at: float) -> list[SloAlertOut]:
    """The SLO's pending and firing alerts: Prometheus' ``ALERTS`` series with its label."""
    rows = prometheus.query(f"ALERTS{{slo={json.dumps(name)}}}", time=at)
    out = [
        SloAlertOut(
            alertname=r.labels.get("alertname", ""),
            state=r.labels.get("alertstate", ""),
            severity=r.labels.get("severity"),
            labels={k: v for k, v in r.labels.items() if k not in ("__name__", "alertstate")},
        )
        for r in rows
    ]
    return sorted(out, key=lambda a: (a.state != "firing", a.alertname, a.severity or ""))


@router.put(
    "/{name}",
    summary="Replace an SLO's definition (and regenerate the rules)",
    dependencies=[WriteAccess],
    responses={**AUTH, **PROMQL, **SLO_NOT_FOUND},
)
def replace_slo(
    name: SloName,
    body: SloSpec,
    response: Response,
    store: SloStoreDep,
    slis: SliStoreDep,
    prometheus: PrometheusDep,
    publisher: PublisherDep,
) -> Slo:
    slo_or_404(store, name)
    check_sli(body, slis, prometheus)
    record = store.update(name, body, int(time.time()))
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLO named {name!r}")
    log.info("SLO %s replaced: %s %% over %s", name, body.objective, body.period)
    republish(response, store, slis, publisher)
    return record


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an SLO (and regenerate the rules)",
    dependencies=[WriteAccess],
    responses={**AUTH, **SLO_NOT_FOUND},
)
def delete_slo(
    name: SloName, store: SloStoreDep, slis: SliStoreDep, publisher: PublisherDep
) -> Response:
    if not store.delete(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLO named {name!r}")
    log.info("SLO %s deleted", name)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    republish(response, store, slis, publisher)
    return response
