"""The web UI: a Starlette app over one ``Flow``'s public API.

Pages are rendered on the server with Jinja2 (autoescaped: a run's output containing
``<script>`` is shown as text). Live pages hold a server-sent-events stream that sends
the re-rendered part of the page whenever what it shows changed; the browser swaps it
in. No JavaScript comes from outside the app: Mermaid (for diagrams) is vendored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durableflow.admin.formatting import format_seconds, format_time
from durableflow.admin.records import RUN_STATUSES
from durableflow.errors import (
    ConfigurationError,
    DurableFlowError,
    RunActionRefused,
    RunNotFound,
)
from durableflow.web.actions import run_action
from durableflow.web.security import (
    COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    Access,
    Guard,
)
from durableflow.web.views import RunFilters, load_run_view, load_runs_view

logger = logging.getLogger("durableflow.web")

TOKEN_ENV = "DURABLEFLOW_UI_TOKEN"  # noqa: S105 - the variable's name, not a secret
LIVE_INTERVAL = 1.0  # seconds between checks of a live page
KEEPALIVE_EVERY = 15  # checks between keep-alive comments on an idle stream


class _SecurityHeaders:
    """Adds the security headers (CSP, nosniff, no framing) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class AdminUI:
    """The handlers, bound to one Flow, one Guard and one template environment."""

    def __init__(self, flow: Any, *, token: str | None, title: str) -> None:
        self.flow = flow
        self.guard = Guard(token)
        self.title = title
        self.templates = Environment(
            loader=PackageLoader("durableflow.web", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            enable_async=False,
        )
        self.templates.filters["time"] = format_time
        self.templates.filters["seconds"] = format_seconds
        # Not Jinja's tojson: that one is for embedding in <script> and writes `<` as
        # \u003c. Here JSON is shown as text, so the plain JSON is autoescaped instead.
        self.templates.filters["json"] = _json_text

    # -- rendering ---------------------------------------------------------------------

    def _render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        access = self.guard.access(request)
        page = self.templates.get_template(template).render(
            request=request,
            url=lambda name, **params: _path(request, name, **params),
            access=access,
            csrf_field=CSRF_FIELD,
            title=self.title,
            **context,
        )
        return HTMLResponse(page, status_code=status_code)

    def _fragment(self, template: str, request: Request, **context: Any) -> str:
        return self.templates.get_template(template).render(
            request=request,
            url=lambda name, **params: _path(request, name, **params),
            access=self.guard.access(request),
            csrf_field=CSRF_FIELD,
            **context,
        )

    # -- pages -------------------------------------------------------------------------

    async def runs_page(self, request: Request) -> Response:
        filters = RunFilters.from_query(request.query_params)
        try:
            view = await load_runs_view(self.flow, filters)
        except ConfigurationError as exc:
            return self._render(
                request,
                "runs.html",
                400,
                filters=filters,
                view=None,
                error=exc,
                statuses=RUN_STATUSES,
            )
        live = _path(request, "live_runs") + "?" + urlencode(filters.query())
        return self._render(
            request,
            "runs.html",
            filters=filters,
            view=view,
            error=None,
            live_url=live,
            statuses=RUN_STATUSES,
            workflows=sorted({d.name for d in self.flow.registry.workflows}),
        )

    async def run_page(self, request: Request) -> Response:
        try:
            view = await load_run_view(self.flow, request.path_params["run_id"])
        except RunNotFound as exc:
            return self._render(request, "error.html", 404, message=str(exc))
        return self._render(
            request,
            "run.html",
            view=view,
            notice=request.query_params.get("notice"),
            live_url=_path(request, "live_run", run_id=str(view.run.id)),
        )

    async def workers_page(self, request: Request) -> Response:
        workers = await self.flow.list_workers()
        return self._render(request, "workers.html", workers=workers)

    # -- live updates ------------------------------------------------------------------

    async def live_runs(self, request: Request) -> Response:
        filters = RunFilters.from_query(request.query_params)

        async def produce() -> tuple[Any, str]:
            view = await load_runs_view(self.flow, filters)
            return view.fingerprint, self._fragment("_runs_rows.html", request, view=view)

        return self._stream(produce)

    async def live_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        async def produce() -> tuple[Any, str]:
            view = await load_run_view(self.flow, run_id)
            return view.fingerprint, self._fragment("_run_body.html", request, view=view)

        return self._stream(produce)

    def _stream(self, produce: Callable[[], Awaitable[tuple[Any, str]]]) -> Response:
        async def events() -> AsyncIterator[str]:
            last: Any = None
            quiet = 0
            while True:
                try:
                    fingerprint, html = await produce()
                except RunNotFound:
                    yield _event("gone", "this run no longer exists")
                    return
                except DurableFlowError as exc:
                    logger.warning("live update failed: %s", exc, extra={"event": "ui_live_failed"})
                    yield _event("problem", str(exc))
                    fingerprint, html = last, None
                if html is not None and fingerprint != last:
                    last = fingerprint
                    quiet = 0
                    yield _event("update", html)
                else:
                    quiet += 1
                    if quiet % KEEPALIVE_EVERY == 0:
                        yield ": keep-alive\n\n"
                await asyncio.sleep(LIVE_INTERVAL)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    # -- actions -----------------------------------------------------------------------

    def _refuse(self, access: Access, reason: str | None = None) -> Response:
        if reason is None:
            reason = (
                "actions need the UI token: log in, or send it as 'Authorization: Bearer ...'"
                if access.actions_enabled
                else f"the UI is read-only: set {TOKEN_ENV} to enable actions"
            )
        return PlainTextResponse(reason, status_code=403)

    async def act(self, request: Request) -> Response:
        access = self.guard.access(request)
        if not self.guard.same_origin(request):
            return self._refuse(access, "cross-origin request refused")
        if not access.authorized:
            return self._refuse(access)
        form = await request.form()
        values = {key: str(value) for key, value in form.items()}
        if not self.guard.csrf_valid(access, values.get(CSRF_FIELD)):
            return self._refuse(access, "missing or wrong CSRF token: reload the page")
        action = run_action(request.path_params["action"])
        if action is None:
            return PlainTextResponse("no such action", status_code=404)
        run_id = request.path_params["run_id"]
        try:
            run = await self.flow.describe_run(run_id)
            message = await action.perform(self.flow, run, values)
        except RunNotFound as exc:
            return self._answer(request, access, run_id, str(exc), 404)
        except RunActionRefused as exc:
            return self._answer(request, access, run_id, str(exc), 409)
        logger.info(
            "run %s: %s from the web UI: %s",
            run_id,
            action.name,
            message,
            extra={"event": "ui_action", "run_id": str(run_id), "action": action.name},
        )
        return self._answer(request, access, run_id, message, 200)

    def _answer(
        self, request: Request, access: Access, run_id: str, message: str, status: int
    ) -> Response:
        if access.via_header:  # an API client: say it in JSON
            return JSONResponse({"ok": status == 200, "message": message}, status_code=status)
        target = _path(request, "run", run_id=run_id) + "?" + urlencode({"notice": message})
        return RedirectResponse(target, status_code=303)

    # -- login -------------------------------------------------------------------------

    async def login(self, request: Request) -> Response:
        next_url = _local_path(request.query_params.get("next"), request)
        if request.method == "GET":
            return self._render(request, "login.html", next_url=next_url, failed=False)
        if self.guard.token is None:
            return self._refuse(self.guard.access(request))
        if not self.guard.same_origin(request):
            return PlainTextResponse("cross-origin request refused", status_code=403)
        form = await request.form()
        if not self.guard.token_matches(str(form.get("token", ""))):
            return self._render(request, "login.html", 403, next_url=next_url, failed=True)
        response = RedirectResponse(next_url, status_code=303)
        response.set_cookie(
            COOKIE,
            self.guard.new_session_cookie(),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path=_root(request),
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(_path(request, "runs"), status_code=303)
        response.delete_cookie(COOKIE, path=_root(request))
        return response


def _path(request: Request, name: str, **params: Any) -> str:
    """The path of a route (mount point included): links work behind any host name."""
    return request.url_for(name, **params).path


def _json_text(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def _event(name: str, data: str) -> str:
    lines = "".join(f"data: {line}\n" for line in data.splitlines() or [""])
    return f"event: {name}\n{lines}\n"


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")) or "/"


def _local_path(value: str | None, request: Request) -> str:
    """``value`` if it is a path inside this app (no open redirects), else the runs page."""
    root = _root(request).rstrip("/")
    if value and value.startswith(root + "/") and not value.startswith("//"):
        return value
    return _path(request, "runs")


def create_app(flow: Any, *, token: str | None = None, title: str = "durableflow") -> Starlette:
    """The web UI for ``flow`` as a Starlette app (see ``Flow.admin_app``).

    ``token`` defaults to ``DURABLEFLOW_UI_TOKEN``; without one the UI is read-only.
    """
    ui = AdminUI(flow, token=token if token is not None else os.environ.get(TOKEN_ENV), title=title)
    routes = [
        Route("/", ui.runs_page, name="runs"),
        Route("/runs/{run_id}", ui.run_page, name="run"),
        Route("/workers", ui.workers_page, name="workers"),
        Route("/live/runs", ui.live_runs, name="live_runs"),
        Route("/live/runs/{run_id}", ui.live_run, name="live_run"),
        Route("/runs/{run_id}/actions/{action}", ui.act, methods=["POST"], name="run_action"),
        Route("/login", ui.login, methods=["GET", "POST"], name="login"),
        Route("/logout", ui.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("durableflow.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])
    app.state.admin_ui = ui
    return app
