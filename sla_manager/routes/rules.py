"""``GET /rules``: the Prometheus rule file generated from the SLOs, as YAML."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from sla_manager.deps import SliStoreDep
from sla_manager.errors import UNAVAILABLE
from sla_manager.routes.slos import PublisherDep, SloStoreDep, current_rules

router = APIRouter(tags=["slos"], responses={**UNAVAILABLE})

YAML = "application/yaml"


@router.get(
    "/rules",
    summary="The generated Prometheus rules (recording, burn-rate and predicted-breach alerts)",
    response_class=PlainTextResponse,
    responses={200: {"content": {YAML: {}}, "description": "a Prometheus rule file"}},
)
def get_rules(store: SloStoreDep, slis: SliStoreDep, publisher: PublisherDep) -> PlainTextResponse:
    return PlainTextResponse(current_rules(store, slis, publisher).yaml(), media_type=YAML)
