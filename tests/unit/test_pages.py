"""The pages' routes and assets without a browser or a stack (``routes/pages.py``): what each
page's HTML loads, that it is all served from the app itself, and the size budget."""

from __future__ import annotations

import gzip
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from sla_manager.app import create_app
from sla_manager.routes.pages import PAGES_DIR, STATIC_DIR
from sla_manager.settings import SlaSettings

BUDGET_GZIP_BYTES = 250_000


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    # No request here reaches MySQL or Prometheus: the pages are static.
    with TestClient(create_app(SlaSettings(environment="test"))) as c:
        yield c


@pytest.mark.parametrize(
    ("path", "page"),
    [
        ("/", "overview"),
        ("/ui/slis/fd-allocated", "sli"),
        ("/ui/slos/x", "slo"),
        ("/ui/etl", "etl"),
    ],
)
def test_each_page_is_the_shell_with_its_name_and_only_local_assets(
    client: TestClient, path: str, page: str
) -> None:
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert f'data-page="{page}"' in r.text
    urls = re.findall(r'(?:src|href)="([^"]+)"', r.text)
    assert "/static/dashboard.js" in urls and "/static/dashboard.css" in urls
    assert not [u for u in urls if "://" in u or u.startswith("//")]


def test_docs_are_served_from_static_and_redoc_is_off(client: TestClient) -> None:
    r = client.get("/docs")
    assert r.status_code == 200
    assert "/static/swagger/swagger-ui-bundle.js" in r.text
    assert "/static/swagger/swagger-ui.css" in r.text
    assert "cdn" not in r.text.lower()
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        got = client.get(f"/static/swagger/{asset}")
        assert got.status_code == 200 and len(got.content) > 10_000
    assert client.get("/redoc").status_code == 404
    # The pages are not part of the API's schema.
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/ui", "/docs", "/static"))]


def test_the_script_bundles_uplot_and_the_page_stays_within_budget(client: TestClient) -> None:
    js = client.get("/static/dashboard.js")
    assert js.status_code == 200
    assert "javascript" in js.headers["content-type"]
    assert "uPlot" in js.text or "uplot" in js.text
    total = sum(
        len(gzip.compress(p.read_bytes(), 9))
        for p in (
            PAGES_DIR / "page.html",
            STATIC_DIR / "dashboard.js",
            STATIC_DIR / "dashboard.css",
        )
    )
    assert total < BUDGET_GZIP_BYTES
