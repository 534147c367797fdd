"""Route dependencies as ``Annotated[..., Depends(...)]`` aliases (as in
full-stack-fastapi-template's ``api/deps.py``).

The cheap ones are ``async def`` so that FastAPI calls them on the event loop instead of
sending each to the thread pool; the one that queries MySQL is a plain ``def``.
"""

from __future__ import annotations

import logging
import secrets
from typing import Annotated

from fastapi import Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sla_common.prometheus import PrometheusClient
from sla_manager.models import SLUG_PATTERN, Sli
from sla_manager.services import Services
from sla_manager.settings import SlaSettings
from sla_manager.store import ForecastStore, SliStore

log = logging.getLogger(__name__)

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="SLA_API_TOKEN",
    description="`Authorization: Bearer <SLA_API_TOKEN>`; needed by POST/PUT/PATCH/DELETE only",
)


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_settings(services: ServicesDep) -> SlaSettings:
    return services.settings


async def get_prometheus(services: ServicesDep) -> PrometheusClient:
    return services.prometheus


async def get_sli_store(services: ServicesDep) -> SliStore:
    return services.slis


async def get_forecast_store(services: ServicesDep) -> ForecastStore:
    return services.forecasts


SettingsDep = Annotated[SlaSettings, Depends(get_settings)]
PrometheusDep = Annotated[PrometheusClient, Depends(get_prometheus)]
SliStoreDep = Annotated[SliStore, Depends(get_sli_store)]
ForecastStoreDep = Annotated[ForecastStore, Depends(get_forecast_store)]
SliName = Annotated[str, Path(pattern=SLUG_PATTERN, description="the SLI's slug")]


async def require_writer(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """401 without a bearer token, 403 with a wrong one (compared in constant time), 403
    for every write while the server has no SLA_API_TOKEN."""
    if credentials is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            detail="writes need an 'Authorization: Bearer <token>' header",
            headers={"WWW-Authenticate": "Bearer"},
        )
    expected = settings.api_token()
    if expected is None:
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            detail="writes are disabled on this server: it has no SLA_API_TOKEN set",
        )
    if not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail="wrong token")


WriteAccess = Depends(require_writer)


def sli_or_404(store: SliStore, name: str) -> Sli:
    """Called in the endpoints, not as a dependency: FastAPI solves dependencies before it
    validates query parameters, and a bad parameter should get its 422 without a query."""
    record = store.get(name)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no SLI named {name!r}")
    return record
