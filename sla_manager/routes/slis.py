"""``/slis``: create, read, replace and delete SLI definitions (writes need the token)."""

from __future__ import annotations

import logging
import time
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status

from sla_common.prometheus import PrometheusClient
from sla_manager.bodies import StrictJsonRoute
from sla_manager.deps import PrometheusDep, SliName, SliStoreDep, WriteAccess, sli_or_404
from sla_manager.errors import AUTH, CONFLICT, NOT_FOUND, PROMQL, TOO_LARGE, UNAVAILABLE
from sla_manager.models import ListQuery, Sli, SliCreate, SliSpec
from sla_manager.store import DuplicateSli

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/slis", tags=["slis"], responses={**UNAVAILABLE}, route_class=StrictJsonRoute
)


def check_selector(prometheus: PrometheusClient, selector: str) -> None:
    """Ask Prometheus to evaluate the selector now: its verdict is the only reliable one.

    Raises PrometheusError (→ 400 with Prometheus' text) when it rejects the PromQL or the
    result is not an instant vector or a scalar; PrometheusUnavailable (→ 503) when it
    cannot be asked: an SLI is never stored unchecked.
    """
    prometheus.query(selector)


@router.get("", summary="List SLIs by name")
def list_slis(params: Annotated[ListQuery, Query()], store: SliStoreDep) -> list[Sli]:
    return store.list(params.limit, params.after)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create an SLI",
    dependencies=[WriteAccess],
    responses={**AUTH, **PROMQL, **CONFLICT, **TOO_LARGE},
)
def create_sli(
    body: SliCreate, response: Response, store: SliStoreDep, prometheus: PrometheusDep
) -> Sli:
    check_selector(prometheus, body.selector)
    try:
        record = store.create(body.name, body, int(time.time()))
    except DuplicateSli:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"an SLI named {body.name!r} exists"
        ) from None
    log.info("SLI %s created: %s in [%s, %s]", body.name, body.selector, body.min, body.max)
    response.headers["Location"] = f"/slis/{record.name}"
    return record


@router.get("/{name}", summary="One SLI", responses={**NOT_FOUND})
def get_sli(name: SliName, store: SliStoreDep) -> Sli:
    return sli_or_404(store, name)


@router.put(
    "/{name}",
    summary="Replace an SLI's definition",
    dependencies=[WriteAccess],
    responses={**AUTH, **PROMQL, **NOT_FOUND, **TOO_LARGE},
)
def replace_sli(name: SliName, body: SliSpec, store: SliStoreDep, prometheus: PrometheusDep) -> Sli:
    sli_or_404(store, name)  # before asking Prometheus: a 404 says more than a 400
    check_selector(prometheus, body.selector)
    record = store.update(name, body, int(time.time()))
    if record is None:  # deleted in the meantime
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    log.info("SLI %s replaced: %s in [%s, %s]", name, body.selector, body.min, body.max)
    return record


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an SLI",
    dependencies=[WriteAccess],
    responses={**AUTH, **NOT_FOUND},
)
def delete_sli(name: SliName, store: SliStoreDep) -> Response:
    if not store.delete(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    log.info("SLI %s deleted", name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
