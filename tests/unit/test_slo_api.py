"""/slos and /rules without their dependencies (as test_sla_api.py): auth, validation,
503s; and the rule publisher's write and reload branches."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sla_manager.settings import SlaSettings
from sla_manager.slo.model import RatioSli, Slo, SloSpec
from sla_manager.slo.publish import RulePublisher
from tests.integration.slautil import ServerThread
from tests.unit.promfake import Answer, PrometheusHttp
from tests.unit.test_sla_api import TOKEN, _auth, _dead_port, _settings

RATIO = {
    "errors": 'sum(rate(http_requests_total{code=~"5.."}[{{.window}}]))',
    "total": "sum(rate(http_requests_total[{{.window}}]))",
}
SLO = {"name": "api", "ratio": RATIO, "objective": 99.9, "period": "30d"}


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with ServerThread(_settings()) as server, httpx.Client(base_url=server.base_url) as c:
        yield c


def test_writes_need_the_token(client: httpx.Client) -> None:
    assert client.post("/slos", json=SLO).status_code == 401
    assert client.post("/slos", json=SLO, headers=_auth("wrong")).status_code == 403
    assert client.put("/slos/api", json=SLO, headers=_auth("wrong")).status_code == 403
    assert client.delete("/slos/api").status_code == 401


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({**SLO, "objective": 100}, "less than 100"),
        ({**SLO, "period": "12h"}, "between 1d and 365d"),
        ({**SLO, "sli": "fd"}, "exactly one of `sli`"),
        ({**SLO, "ratio": {**RATIO, "total": "sum(rate(x[5m]))"}}, "{{.window}} placeholder"),
        ({**SLO, "labels": {"severity": "x"}}, "is set by the generated rules"),
        ({**SLO, "extra": 1}, "Extra inputs are not permitted"),
    ],
)
def test_bad_bodies_are_422_saying_why(
    client: httpx.Client, body: dict[str, Any], message: str
) -> None:
    r = client.post("/slos", json=body, headers=_auth())
    assert r.status_code == 422, r.text
    assert message in r.text


def test_reads_answer_503_while_mysql_is_down(client: httpx.Client) -> None:
    for path in ("/slos", "/slos/api", "/rules"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.headers["Retry-After"] == "7"
    assert client.get("/slos/Not_A_Slug").status_code == 422
    assert client.get("/slos/api?source=guess").status_code == 422


# --------------------------------------------------------------------------- publisher


def _slo() -> Slo:
    spec = SloSpec(ratio=RatioSli(**RATIO), objective=99.9)
    return Slo(name="api", **spec.model_dump(), created_at=0, updated_at=0)


RELOADED: Answer = (200, b"reloading")


@pytest.fixture
def prometheus() -> Iterator[PrometheusHttp]:
    """A stand-in answering POST /-/reload (the real one: tests/integration/test_slo.py)."""
    with PrometheusHttp(lambda _path, _form: RELOADED) as fake:
        yield fake


def _publisher(**kw: Any) -> RulePublisher:
    base: dict[str, Any] = {"environment": "test", "sla_api_token": TOKEN}
    return RulePublisher(SlaSettings(**{**base, **kw}))


def test_rules_are_written_readable_and_prometheus_reloaded(
    tmp_path: Path, prometheus: PrometheusHttp
) -> None:
    path = tmp_path / "rules" / "slo.rules.yml"
    publisher = _publisher(slo_rules_file=path, prometheus_url=prometheus.url)
    result = publisher.publish(publisher.render([_slo()], {}))
    assert result.status == "reloaded"
    assert prometheus.paths() == ["/-/reload"]
    assert "slo:sli_error:ratio_rate30d" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["slo.rules.yml"]  # no temporary left


def test_a_refused_reload_is_reported_not_raised(
    tmp_path: Path, prometheus: PrometheusHttp
) -> None:
    prometheus.respond = lambda _path, _form: (500, b"error loading rules")
    publisher = _publisher(slo_rules_file=tmp_path / "r.yml", prometheus_url=prometheus.url)
    assert publisher.publish(publisher.render([], {})).status == "reload_failed"
    dead = _publisher(
        slo_rules_file=tmp_path / "r.yml", prometheus_url=f"http://127.0.0.1:{_dead_port()}"
    )
    assert dead.publish(dead.render([], {})).status == "reload_failed"


def test_without_a_rules_file_nothing_is_written(tmp_path: Path) -> None:
    publisher = _publisher()
    assert publisher.publish(publisher.render([_slo()], {})).status == "not_configured"
    blocked = tmp_path / "file"
    blocked.write_text("")
    unwritable = _publisher(slo_rules_file=blocked / "r.yml", slo_prometheus_reload=False)
    assert unwritable.publish(unwritable.render([], {})).status == "write_failed"
