"""A property-based run of the SLA manager's own OpenAPI schema against the running app.

schemathesis generates requests for every operation from /openapi.json (valid ones and,
for the body and parameters, invalid ones), sends them to ``python -m sla_manager`` on the
real stack, and checks each answer: never a 5xx, a status code the schema documents, the
documented content type and headers, a body that matches the documented schema. The
examples are bounded (MAX_EXAMPLES per operation) to keep the run under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.result import Err

from sla_manager.app import create_app
from sla_manager.settings import SlaSettings
from tests.integration.slautil import AppProcess, running_app
from tests.integration.stackutil import Stack

TOKEN = "schemathesis-token-51e0"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_EXAMPLES = 25
KNOWN_SLI = "schemathesis-fd-allocated"
Operation = APIOperation[Any, Any, Any, Any]


@pytest.fixture(scope="module")
def app(
    stack: Stack, database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AppProcess]:
    log = tmp_path_factory.mktemp("schemathesis") / "sla.log"
    with running_app(stack, database, log, token=TOKEN) as proc:
        # Something for the generated names to find (short names are generated often),
        # and one they will not touch, for the evaluations.
        with httpx.Client(base_url=proc.base_url) as c:
            for name in ("0", "a", KNOWN_SLI):
                body = {"name": name, "selector": 'node_filefd_allocated{job="host"}'}
                r = c.post("/slis", json={**body, "max": 20000}, headers=AUTH)
                assert r.status_code == 201, r.text
        yield proc


def _schema() -> dict[str, Any]:
    """The app's OpenAPI document, built in-process at collection time so that each
    operation is its own test (the running app must serve the same one: checked below)."""
    app = create_app(SlaSettings(sla_api_token=TOKEN))
    try:
        return app.openapi()
    finally:
        app.state.services.close()


SCHEMA_DOC = _schema()


def _operations() -> list[Operation]:
    out: list[Operation] = []
    for result in schemathesis.openapi.from_dict(SCHEMA_DOC).get_all_operations():
        if isinstance(result, Err):
            raise AssertionError(f"schemathesis cannot read the app's schema: {result.err()}")
        out.append(result.ok())
    return out


OPERATIONS = _operations()


def test_the_app_serves_this_schema(app: AppProcess) -> None:
    assert httpx.get(f"{app.base_url}/openapi.json").json() == SCHEMA_DOC


def _runs() -> list[tuple[Operation, GenerationMode, str | None]]:
    """Every operation with valid data; those taking input also with invalid data; the
    evaluations also for an SLI that exists (a random name almost never does)."""
    runs: list[tuple[Operation, GenerationMode, str | None]] = []
    for op in OPERATIONS:
        runs.append((op, GenerationMode.POSITIVE, None))
        if op.body or any(True for _ in op.iter_parameters()):
            runs.append((op, GenerationMode.NEGATIVE, None))
        if op.method.upper() == "GET" and op.path.startswith("/slis/{name}/"):
            runs.append((op, GenerationMode.POSITIVE, KNOWN_SLI))
    return runs


def _id(value: object) -> str:
    if isinstance(value, APIOperation):
        return value.label
    return str(value) if value is not None else "any-name"


@pytest.mark.parametrize(("operation", "mode", "name"), _runs(), ids=_id)
def test_every_operation_conforms_to_the_schema(
    app: AppProcess, operation: Operation, mode: GenerationMode, name: str | None
) -> None:
    path_parameters = {"name": name} if name else None

    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case[Any]) -> None:
        case.call_and_validate(
            base_url=app.base_url,
            headers=AUTH,
            timeout=30,
            # The API has cross-field rules JSON Schema cannot state (min <= max; window or
            # start; at most 11,000 evaluations per series): a schema-valid request may get
            # its documented 422. Every other check stays on.
            excluded_checks=[positive_data_acceptance],
        )

    check()


def test_the_run_reached_past_validation_and_never_failed(app: AppProcess) -> None:
    """After the run: the app's own counters show answers beyond 4xx, and no 5xx at all."""
    text = httpx.get(f"{app.base_url}/metrics").text
    answered = [
        line for line in text.splitlines() if line.startswith("sla_manager_http_requests_total{")
    ]
    assert not [line for line in answered if 'status="5' in line], answered
    for route in (
        "/slis/{name}/status",
        "/slis/{name}/violations",
        "/slis/{name}/forecast-violations",
    ):
        assert any(f'route="{route}",status="200"' in line for line in answered), (route, answered)
