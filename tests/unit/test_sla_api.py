"""The REST app without its dependencies: contract, auth, validation and 503s.

The app is served by uvicorn in a thread on a free port and pointed at ports where nothing
listens for MySQL and Prometheus (no mocks): whatever needs MySQL or
Prometheus answers 503, and everything decided before that (auth, validation, the OpenAPI
schema, /metrics) is checked here. tests/integration/test_sla_*.py run it for real.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from sla_manager.errors import safe_errors
from sla_manager.settings import SlaSettings
from tests.integration.slautil import ServerThread

TOKEN = "unit-test-token-0123456789"
SLI = {"name": "fd", "selector": "node_filefd_allocated", "max": 20000}


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _settings(token: str | None = TOKEN) -> SlaSettings:
    return SlaSettings(
        environment="test",
        prometheus_url=f"http://127.0.0.1:{_dead_port()}",
        prometheus_timeout_s=2,
        mysql_host="127.0.0.1",
        mysql_port=_dead_port(),
        mysql_connect_timeout_s=1,
        sla_api_token=token,
        sla_retry_after_s=7,
    )


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with ServerThread(_settings()) as server, httpx.Client(base_url=server.base_url) as c:
        yield c


@pytest.fixture
def fresh_client() -> Iterator[httpx.Client]:
    """An app of its own, for tests that read its counters."""
    with ServerThread(_settings()) as server, httpx.Client(base_url=server.base_url) as c:
        yield c


def _auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_openapi_has_the_contract_and_guards_only_writes(client: httpx.Client) -> None:
    doc = client.get("/openapi.json").json()
    paths = doc["paths"]
    assert set(paths) >= {
        "/slis",
        "/slis/{name}",
        "/slis/{name}/status",
        "/slis/{name}/violations",
        "/slis/{name}/forecast-violations",
        "/etl/execution-time",
        "/etl/cycles",
        "/etl/cycles/{run_id}",
        "/slos/{name}/budget-history",
        "/healthz",
    }
    assert "/metrics" not in paths
    guarded = {
        (method.upper(), path)
        for path, ops in paths.items()
        for method, op in ops.items()
        if op.get("security")
    }
    assert guarded == {
        ("POST", "/slis"),
        ("PUT", "/slis/{name}"),
        ("PATCH", "/slis/{name}"),
        ("DELETE", "/slis/{name}"),
        ("POST", "/slos"),
        ("PUT", "/slos/{name}"),
        ("DELETE", "/slos/{name}"),
    }
    patch_body = paths["/slis/{name}"]["patch"]["requestBody"]["content"]
    assert set(patch_body) == {"application/merge-patch+json"}
    for path, ops in paths.items():
        for method, op in ops.items():
            if (method.upper(), path) in guarded:
                assert {"401", "403"} <= set(op["responses"]), (method, path)
            if path.startswith(("/slis", "/etl")):
                assert "503" in op["responses"], (method, path)
    assert client.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/slis", SLI),
        ("PUT", "/slis/fd", SLI),
        ("PATCH", "/slis/fd", {"description": "x"}),
        ("DELETE", "/slis/fd", None),
    ],
)
def test_writes_need_the_token(
    client: httpx.Client, method: str, path: str, body: dict[str, object] | None
) -> None:
    missing = client.request(method, path, json=body)
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    assert "Authorization: Bearer" in missing.json()["detail"]
    basic = client.request(method, path, json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    wrong = client.request(method, path, json=body, headers=_auth("unit-test-token-012345678X"))
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "wrong token"}


def test_auth_comes_before_validation(client: httpx.Client) -> None:
    r = client.post("/slis", json={"name": "Not A Slug"})
    assert r.status_code == 401  # an anonymous client learns nothing about the body


def test_patch_takes_a_merge_patch_after_auth(client: httpx.Client) -> None:
    body = b'{"description": "x"}'
    plain = {"Content-Type": "text/plain", **_auth()}
    assert (
        client.patch("/slis/fd", content=body, headers={"Content-Type": "text/plain"}).status_code
        == 401
    )
    r = client.patch("/slis/fd", content=body, headers=plain)
    assert r.status_code == 415, r.text
    assert r.headers["Accept-Patch"] == "application/merge-patch+json"
    # Both JSON media types get past the check (to MySQL, which is not there: 503).
    for media in ("application/merge-patch+json", "application/json; charset=utf-8"):
        r = client.patch("/slis/fd", content=body, headers={"Content-Type": media, **_auth()})
        assert r.status_code == 503, (media, r.text)
    # Not an object: a merge patch would replace the whole SLI with it.
    r = client.patch(
        "/slis/fd", content=b"[1]", headers={"Content-Type": "application/json", **_auth()}
    )
    assert r.status_code == 422, r.text


def test_no_token_configured_means_no_writes() -> None:
    with (
        ServerThread(_settings(token=None)) as server,
        httpx.Client(base_url=server.base_url) as c,
    ):
        r = c.post("/slis", json=SLI, headers=_auth())
    assert r.status_code == 403
    assert "no SLA_API_TOKEN" in r.json()["detail"]


def test_bad_bodies_get_422_without_touching_a_dependency(client: httpx.Client) -> None:
    cases = [
        ({**SLI, "name": "Bad_Name"}, "name"),
        ({**SLI, "min": 5, "max": 1}, "must not exceed"),
        ({"name": "x", "selector": "up"}, "give min, max or both"),
        ({**SLI, "unknown": 1}, "Extra inputs are not permitted"),
    ]
    for body, message in cases:
        r = client.post("/slis", json=body, headers=_auth())
        assert r.status_code == 422, body
        assert message in r.text, r.text


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("window=2x", "'2x' is not a duration"),
        ("window=1h&start=1000", "either window or start"),
        ("window=12h&step=1", "at most 11000"),
        ("window=30d", "at most 7 days"),
        ("window=1h&bogus=1", "Extra inputs"),
    ],
)
def test_bad_violation_parameters_get_422_before_any_lookup(
    client: httpx.Client, query: str, message: str
) -> None:
    # MySQL is down: had the SLI been looked up first this would be a 503.
    r = client.get(f"/slis/fd/violations?{query}")
    assert r.status_code == 422, r.text
    assert message in r.text


def test_bad_horizon_window_and_name_get_422(client: httpx.Client) -> None:
    assert client.get("/slis/fd/forecast-violations?horizon=soon").status_code == 422
    assert client.get("/etl/execution-time?window=40d").status_code == 422
    assert client.get("/slis/Not_A_Slug").status_code == 422


def test_dependencies_down_give_503_with_retry_after(fresh_client: httpx.Client) -> None:
    client = fresh_client
    for r in (
        client.get("/slis"),  # MySQL
        client.get("/slis/fd/status"),  # MySQL first
        client.post("/slis", json=SLI, headers=_auth()),  # Prometheus checks the selector
        client.get("/etl/execution-time"),  # Prometheus only
    ):
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "7"
        assert r.json()["detail"].startswith(("MySQL unavailable", "Prometheus unavailable"))
    metrics = client.get("/metrics").text
    assert 'sla_manager_dependency_failures_total{dependency="mysql"} 2.0' in metrics
    assert 'sla_manager_dependency_failures_total{dependency="prometheus"} 2.0' in metrics


def test_the_pages_routes_answer_503_when_their_dependency_is_down(client: httpx.Client) -> None:
    for path, dependency in (
        ("/etl/cycles?window=1h", "MySQL"),
        ("/etl/cycles/some-run", "MySQL"),
        ("/slos/some-slo/budget-history", "MySQL"),  # the SLO is looked up first
    ):
        r = client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["Retry-After"] == "7"
        assert r.json()["detail"].startswith(f"{dependency} unavailable"), r.text
    # refused before anything is asked of MySQL
    assert client.get("/etl/cycles?window=40d").status_code == 422
    assert client.get("/etl/cycles/bad%20id").status_code == 422
    assert client.get("/slos/some-slo/budget-history?points=1").status_code == 422


def test_healthz_says_which_dependency_answers_and_readyz_gates(client: httpx.Client) -> None:
    health = client.get("/healthz")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "degraded"
    assert body["mysql"]["ok"] is False and "OperationalError" in body["mysql"]["error"]
    assert body["prometheus"]["ok"] is False
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.headers["Retry-After"] == "7"


def test_metrics_label_requests_by_route_template(fresh_client: httpx.Client) -> None:
    client = fresh_client
    client.get("/slis/fd/violations?window=2x")
    client.get("/slis/other/violations?window=2x")
    client.get("/no/such/path")
    client.get("/openapi.json")
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    text = r.text
    assert (
        'sla_manager_http_requests_total{method="GET",route="/slis/{name}/violations",'
        'status="422"} 2.0' in text
    )
    assert 'route="<unmatched>",status="404"' in text
    assert 'route="/openapi.json",status="200"' in text
    assert "sla_manager_http_request_duration_seconds_bucket" in text


def test_unknown_methods_and_routes_collapse_into_one_label_each(
    fresh_client: httpx.Client,
) -> None:
    client = fresh_client
    for method in ("PROBEA", "PROBEB", "X-CUSTOM"):
        for path in ("/slis", "/nope/1", "/nope/2"):
            assert client.request(method, path).status_code in (404, 405)
    client.request("PATCH", "/slis")  # a standard method keeps its name
    text = client.get("/metrics").text
    assert "PROBE" not in text and "X-CUSTOM" not in text and "/nope" not in text
    assert 'sla_manager_http_requests_total{method="other",route="/slis",status="405"} 3.0' in text
    assert (
        'sla_manager_http_requests_total{method="other",route="<unmatched>",status="404"} 6.0'
        in text
    )
    assert 'method="PATCH",route="/slis",status="405"' in text


# Bodies Python's json reads but JSON and UTF-8 cannot hold: each a 422 saying what.
NON_JSON = [
    ('{"name": "fd", "selector": "up", "max": NaN}', "NaN is not a JSON number"),
    ('{"name": "fd", "selector": "up", "max": Infinity}', "Infinity is not a JSON number"),
    ('{"name": "fd", "selector": "up", "min": -Infinity}', "-Infinity is not a JSON number"),
    ('{"name": "fd", "selector": "up", "max": 1e309}', "1e309 is beyond the range of a double"),
    ('{"name": "fd", "selector": "\\ud800", "max": 1}', "lone surrogate \\ud800"),
    ('{"name": "fd", "selector": "up", "max": 1, "labels": {"\\udfff": "x"}}', "\\udfff"),
    ('{"name": "\\ud800", "selector": "up", "max": 1}', "lone surrogate"),
]


@pytest.mark.parametrize(("method", "path"), [("POST", "/slis"), ("PUT", "/slis/fd")])
@pytest.mark.parametrize(("body", "message"), NON_JSON)
def test_non_json_numbers_and_lone_surrogates_are_a_short_422(
    client: httpx.Client, method: str, path: str, body: str, message: str
) -> None:
    headers = {**_auth(), "Content-Type": "application/json"}
    r = client.request(method, path, content=body.encode(), headers=headers)
    assert r.status_code == 422, r.text
    assert "Traceback" not in r.text and len(r.content) < 1000
    (error,) = r.json()["detail"]
    assert error["type"] == "json_invalid"
    assert message in error["ctx"]["error"], r.text


def test_utf8_encoded_surrogates_are_a_422_too(client: httpx.Client) -> None:
    body = b'{"name": "fd", "selector": "\xed\xa0\x80", "max": 1}'  # U+D800 as UTF-8 bytes
    headers = {**_auth(), "Content-Type": "application/json"}
    r = client.post("/slis", content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert "lone surrogate" in r.text


def test_non_finite_query_parameters_are_a_422(client: httpx.Client) -> None:
    for value in ("NaN", "inf", "-Infinity", "1e309"):
        r = client.get(f"/slis/fd/status?time={value}")
        assert r.status_code == 422, (value, r.text)


def test_a_422_echoes_at_most_a_few_hundred_characters_of_the_input(
    client: httpx.Client,
) -> None:
    big = "x" * 900_000  # under the 1 MiB body limit
    cases = [
        ({**SLI, "description": big}, "description"),
        ({**SLI, "name": big}, "name"),
        ({**SLI, "selector": big}, "selector"),
        ({"name": "fd", "selector": "up", "padding": big}, "padding"),
    ]
    for body, field in cases:
        r = client.post("/slis", json=body, headers=_auth())
        assert r.status_code == 422, r.text
        assert len(r.content) < 2000, (field, len(r.content))
        assert any(field in map(str, e["loc"]) for e in r.json()["detail"]), r.text
        assert "(900000 characters)" in r.text


def test_the_echo_is_json_safe_whatever_the_input() -> None:
    # What FastAPI's own handler failed on: NaN and a lone surrogate in an echoed input.
    errors = [
        {"type": "finite_number", "loc": ("body", "max"), "msg": "m", "input": float("nan")},
        {"type": "x", "loc": ("body", "\ud800"), "msg": "bad \ud800", "input": {"a": "\udfff"}},
        {"type": "x", "loc": ("body",), "msg": "m", "input": [float("inf")] * 1000},
    ]
    out = safe_errors(errors)
    text = json.dumps(out, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")  # raises for a lone surrogate
    assert out[0]["input"] == "NaN"
    assert out[1]["loc"] == ["body", "\\ud800"] and out[1]["input"] == '{"a": "\\udfff"}'
    assert len(out[2]["input"]) < 300


def _raw_post(base_url: str, head: dict[str, str], parts: list[bytes]) -> bytes:
    """Send a request's head and only ``parts`` of its body over a raw socket, then read
    the answer: a server that waits for the whole body never answers (socket timeout)."""
    url = httpx.URL(base_url)
    lines = ["POST /slis HTTP/1.1", f"Host: {url.host}", *(f"{k}: {v}" for k, v in head.items())]
    with socket.create_connection((url.host, url.port or 80), timeout=20) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for part in parts:
            sock.sendall(part)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return answer


def test_a_body_over_the_limit_is_a_413_without_waiting_for_the_rest(
    client: httpx.Client,
) -> None:
    head = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    # Announced as 10 MiB: refused on the header, after 100 bytes of body.
    announced = _raw_post(
        str(client.base_url), {**head, "Content-Length": str(10 * 1024 * 1024)}, [b"{" * 100]
    )
    assert announced.startswith(b"HTTP/1.1 413 "), announced[:200]
    # Chunked (no length): refused once 1 MiB has streamed in, the other 9 MiB never sent.
    chunk = b"x" * 65536
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 17  # 1.06 MiB
    streamed = _raw_post(str(client.base_url), {**head, "Transfer-Encoding": "chunked"}, parts)
    assert streamed.startswith(b"HTTP/1.1 413 "), streamed[:200]
    # And through an ordinary client sending all of it.
    r = client.post("/slis", content=b"{" * (2 * 1024 * 1024), headers=head)
    assert r.status_code == 413 and "Content Too Large" in r.text
    # Just under the limit is read and validated as usual.
    body = json.dumps({**SLI, "description": "x" * (1024 * 1024 - 200)}).encode()
    assert len(body) < 1024 * 1024
    assert client.post("/slis", content=body, headers=head).status_code == 422
