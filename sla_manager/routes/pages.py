"""The pages (issue 18): ``/`` (overview), ``/ui/slis/{name}``, ``/ui/slos/{name}``,
``/ui/etl``, and ``/docs`` with Swagger UI served from ``/static`` (no CDN: the pages work
on a machine without internet).

Each page is a static HTML shell; ``static/dashboard.js`` (built by ``make assets`` from
``web/``, uPlot bundled in) reads the same REST API a user can call and draws it. The pages
add no data of their own: what they show is what the API answers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(str(resources.files("sla_manager") / "static"))
PAGES_DIR = Path(str(resources.files("sla_manager") / "pages"))
PAGES = ("overview", "sli", "slo", "etl")

router = APIRouter(include_in_schema=False)


def _page(page: str) -> HTMLResponse:
    # Read per request: a few KB, and a rebuilt asset shows without a restart.
    html = (PAGES_DIR / "page.html").read_text(encoding="utf-8")
    return HTMLResponse(html.replace("{{page}}", page), headers={"Cache-Control": "no-cache"})


@router.get("/")
def overview_page() -> HTMLResponse:
    return _page("overview")


@router.get("/ui/slis/{name}")
def sli_page(name: str) -> HTMLResponse:
    del name  # the script reads it from the path
    return _page("sli")


@router.get("/ui/slos/{name}")
def slo_page(name: str) -> HTMLResponse:
    del name
    return _page("slo")


@router.get("/ui/etl")
def etl_page() -> HTMLResponse:
    return _page("etl")


@router.get("/docs")
def docs_page() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="SLA Monitor: SLA manager - Swagger UI",
        swagger_js_url="/static/swagger/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger/swagger-ui.css",
        swagger_favicon_url="/static/swagger/favicon-32x32.png",
    )


def install_pages(app: FastAPI) -> None:
    """The pages' routes and ``/static`` (the app must be made with ``docs_url=None``)."""
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
