"""``/slis``: create, read, replace, patch and delete SLI definitions (writes need the token).

``PUT`` replaces the whole definition (a field left out takes its default); ``PATCH`` is a
JSON merge patch (RFC 7396, ``application/merge-patch+json``; ``application/json`` is
accepted too): the fields it names change, ``null`` removes an optional one (back to its
default), ``labels`` merge label by label, and the result must be a valid definition (422
otherwise, the SLI unchanged).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from sla_common.prometheus import PrometheusClient
from sla_manager.bodies import StrictJsonRoute, merge_patch
from sla_manager.deps import PrometheusDep, SliName, SliStoreDep, WriteAccess, sli_or_404
from sla_manager.errors import (
    AUTH,
    CONFLICT,
    NOT_FOUND,
    PROMQL,
    TOO_LARGE,
    UNAVAILABLE,
    UNSUPPORTED_MEDIA,
)
from sla_manager.models import ListQuery, Sli, SliCreate, SliSpec
from sla_manager.routes.slos import PublisherDep, SloStoreDep, republish
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
def replace_sli(
    name: SliName,
    body: SliSpec,
    response: Response,
    store: SliStoreDep,
    prometheus: PrometheusDep,
    slos: SloStoreDep,
    publisher: PublisherDep,
) -> Sli:
    sli_or_404(store, name)  # before asking Prometheus: a 404 says more than a 400
    check_selector(prometheus, body.selector)
    record = store.update(name, body, int(time.time()))
    if record is None:  # deleted in the meantime
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    log.info("SLI %s replaced: %s in [%s, %s]", name, body.selector, body.min, body.max)
    republish(response, slos, store, publisher)  # SLO rules copy the selector and bounds
    return record


MERGE_PATCH = "application/merge-patch+json"
PATCH_MEDIA_TYPES = (MERGE_PATCH, "application/json")


async def merge_patch_body(request: Request) -> None:
    """415 unless the body is declared a merge patch (or plain JSON)."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media not in PATCH_MEDIA_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"PATCH takes a JSON merge patch: Content-Type {MERGE_PATCH} "
            "(or application/json)",
            headers={"Accept-Patch": MERGE_PATCH},
        )


@router.patch(
    "/{name}",
    summary="Change some fields of an SLI (JSON merge patch)",
    description=(
        "RFC 7396: the fields the patch names change; `null` removes an optional field "
        "(`min`, `max`, `description`, `labels`, `missing_data_is_violation`, "
        "`breach_probability_threshold` go back to their defaults; removing `selector`, "
        "or both bounds, is a 422); `labels` merge "
        'label by label (`{"labels": {"device": null}}` drops one). The result must be '
        "a valid definition, and a changed selector is checked by Prometheus, as with PUT."
    ),
    dependencies=[WriteAccess, Depends(merge_patch_body)],
    responses={**AUTH, **PROMQL, **NOT_FOUND, **TOO_LARGE, **UNSUPPORTED_MEDIA},
)
def patch_sli(
    name: SliName,
    patch: Annotated[dict[str, Any], Body(media_type=MERGE_PATCH)],
    response: Response,
    store: SliStoreDep,
    prometheus: PrometheusDep,
    slos: SloStoreDep,
    publisher: PublisherDep,
) -> Sli:
    def patched(current: Sli) -> SliSpec:
        document = merge_patch(current.model_dump(include=set(SliSpec.model_fields)), patch)
        try:
            spec = SliSpec.model_validate(document)
        except ValidationError as e:
            errors = [{**err, "loc": ("body", *err["loc"])} for err in e.errors()]
            raise RequestValidationError(errors) from None
        if spec.selector != current.selector:
            check_selector(prometheus, spec.selector)
        return spec

    record = store.change(name, patched, int(time.time()))
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    log.info(
        "SLI %s patched (%s): %s in [%s, %s]",
        name,
        sorted(patch),
        record.selector,
        record.min,
        record.max,
    )
    republish(response, slos, store, publisher)
    return record


@router.delete(
    "/{name}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete an SLI",
    dependencies=[WriteAccess],
    responses={**AUTH, **NOT_FOUND},
)
def delete_sli(
    name: SliName, store: SliStoreDep, slos: SloStoreDep, publisher: PublisherDep
) -> Response:
    if not store.delete(name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    log.info("SLI %s deleted", name)
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    republish(response, slos, store, publisher)  # an SLO on it has no rules any more
    return response
