"""The viewer's web app (Starlette): the pages and the JSON API they use, which scripts may call.

    GET  /                               the run list (newest first, filterable, trends)
    GET  /runs/{run}                     a run: live progress, the report's sections, its cells
    GET  /runs/{run}/report.html         the run's report.html as written (sandboxed: its own origin)
    GET  /diff?a={run}&b={run}           two runs side by side on shared cells
    GET  /api/runs                       every run folder under the root (JSON)
    GET  /api/runs/{run}                 one run's progress, cost and accuracy (polled by its page)
    GET  /api/runs/{run}/cells?offset=&limit=&model=&prompt=&status=&reviewed=&disagree=
    GET  /api/runs/{run}/reviews         every review of the run, oldest first
    POST /api/runs/{run}/reviews         {row_id, model, prompt, repeat, verdict | grade, note}
    GET  /api/diff?a={run}&b={run}       the pairing behind /diff

`{run}` is the run folder's path relative to the root. A write needs the session token in an
`X-Evalrun-Token` header (403 without): a header, which a page on another site cannot set on a
request to this one. Every page is sent with a Content-Security-Policy that allows no inline
script and nothing from elsewhere, and every text from a reply or a dataset goes into the page
as text (escaped here, `textContent` in the scripts).
"""

from __future__ import annotations

import hmac
import html
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.staticfiles import StaticFiles

from evalrun.errors import EvalrunError, NoSuchCell, ReviewError
from evalrun.view.folders import RunFolders, trends
from evalrun.view.pages import diff_page, list_page, run_page

__all__ = ["TOKEN_HEADER", "create_app"]

TOKEN_HEADER = "X-Evalrun-Token"
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")  # fmt: skip
_HEADERS = {"Content-Security-Policy": _CSP, "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff"}
_PAGES_CACHED = 8


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=_HEADERS)


def _error(status: int, message: str) -> JSONResponse:
    return _json({"error": message}, status)


class _Pages:
    """The rendered report sections of recently opened runs, by the store's report state."""

    def __init__(self) -> None:
        self._cache: OrderedDict[tuple[Path, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Path, str], build: Callable[[], str]) -> str:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        page = build()
        with self._lock:
            self._cache[key] = page
            while len(self._cache) > _PAGES_CACHED:
                self._cache.popitem(last=False)
        return page


def create_app(root: Path, *, token: str, reviewer: str, allowed_hosts: Sequence[str] | None = None) -> Starlette:
    """The viewer over the run folders under `root`; `token` guards every write, `reviewer` is
    recorded with each review; `allowed_hosts` (when given) are the Host headers answered."""
    folders = RunFolders(root)
    pages = _Pages()

    def run_folder(request: Request) -> Path | None:
        return folders.resolve(str(request.path_params.get("run", "")))

    def authorized(request: Request) -> bool:
        given = request.headers.get(TOKEN_HEADER, "")
        return bool(given) and hmac.compare_digest(given.encode(), token.encode())

    def api_runs(request: Request) -> Response:
        runs = folders.list()
        return _json({"root": str(folders.root), "runs": runs, "trends": trends(runs)})

    def api_run(request: Request) -> Response:
        folder = run_folder(request)
        if folder is None:
            return _error(404, "no such run folder under the viewer's folder")
        row = folders.info(folder).as_json()
        row["run"] = folders.name_of(folder)
        row.pop("folder", None)
        return _json(row)

    def api_cells(request: Request) -> Response:
        from evalrun.view.cells import cells_page, parse_query

        folder = run_folder(request)
        if folder is None:
            return _error(404, "no such run folder under the viewer's folder")
        try:
            return _json(cells_page(folder, parse_query(request.query_params)))
        except ReviewError as exc:
            return _error(400, str(exc))
        except EvalrunError as exc:
            return _error(409, str(exc))

    def api_reviews(request: Request) -> Response:
        from evalrun.reports.build import open_run

        folder = run_folder(request)
        if folder is None:
            return _error(404, "no such run folder under the viewer's folder")
        try:
            store, _ = open_run(folder, readonly=True)
        except EvalrunError as exc:
            return _error(409, str(exc))
        with store:
            return _json({"reviews": [review.as_json() for review in store.reviews()]})

    async def api_add_review(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from evalrun.view.reviewing import add_review

        if not authorized(request):
            return _error(403, f"a review needs the session token in the {TOKEN_HEADER} header (printed at start)")
        folder = run_folder(request)
        if folder is None:
            return _error(404, "no such run folder under the viewer's folder")
        try:
            payload = json.loads(await request.body())
        except ValueError:
            return _error(400, "the body is not JSON: send {row_id, model, prompt, repeat, verdict | grade, note}")
        try:
            review = await run_in_threadpool(add_review, folder, payload, reviewer=reviewer)
        except NoSuchCell as exc:
            return _error(404, str(exc))
        except ReviewError as exc:
            return _error(400, str(exc))
        except EvalrunError as exc:
            return _error(409, str(exc))
        folders.forget(folder)
        return _json(review.as_json(), 201)

    def api_diff(request: Request) -> Response:
        from evalrun.view.pairing import pair_runs

        a = folders.resolve(request.query_params.get("a", ""))
        b = folders.resolve(request.query_params.get("b", ""))
        if a is None or b is None:
            return _error(404, "give two run folders under the viewer's folder: ?a=RUN&b=RUN")
        try:
            return _json(pair_runs(a, b))
        except EvalrunError as exc:
            return _error(409, str(exc))

    def page_list(request: Request) -> Response:
        return HTMLResponse(list_page(), headers=_HEADERS)

    def page_run(request: Request) -> Response:
        folder = run_folder(request)
        if folder is None:
            return HTMLResponse(_not_found(), status_code=404, headers=_HEADERS)
        return HTMLResponse(run_page(folder, folders.name_of(folder), pages.get), headers=_HEADERS)

    def page_report(request: Request) -> Response:
        folder = run_folder(request)
        report = folder / "report.html" if folder is not None else None
        if report is None or report.is_symlink() or not report.is_file():
            return HTMLResponse(_not_found(), status_code=404, headers=_HEADERS)
        # The report's own page, with its explorer (inline script): sandboxed, so it runs in an
        # origin of its own and can neither call the API nor read the session token.
        headers = {**_HEADERS, "Content-Security-Policy": "sandbox allow-scripts; default-src 'none'; "
                   "script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"}  # fmt: skip
        return FileResponse(report, media_type="text/html", headers=headers)

    def page_diff(request: Request) -> Response:
        a = folders.resolve(request.query_params.get("a", ""))
        b = folders.resolve(request.query_params.get("b", ""))
        if a is None or b is None:
            return HTMLResponse(_not_found(), status_code=404, headers=_HEADERS)
        return HTMLResponse(diff_page(folders.name_of(a), folders.name_of(b), a, b), headers=_HEADERS)

    routes = [
        Route("/", page_list),
        Route("/diff", page_diff),
        Route("/runs/{run:path}/report.html", page_report),
        Route("/runs/{run:path}", page_run),
        Route("/api/runs", api_runs),
        Route("/api/diff", api_diff),
        Route("/api/runs/{run:path}/cells", api_cells),
        Route("/api/runs/{run:path}/reviews", api_reviews, methods=["GET"]),
        Route("/api/runs/{run:path}/reviews", api_add_review, methods=["POST"]),
        Route("/api/runs/{run:path}", api_run),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))] if allowed_hosts else [],
    )
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    return app


def _not_found() -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>not found</title></head>"
            f"<body><p>No such run folder under the viewer's folder. <a href=\"/\">{html.escape('All runs')}</a></p>"
            "</body></html>")  # fmt: skip
