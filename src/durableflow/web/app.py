"""The web UI: a Starlette app over one ``Flow``'s public API.

Pages are rendered on the server with Jinja2 (autoescaped: a run's output containing
``<script>`` is shown as text). Live pages hold a server-sent-events stream that sends
the re-rendered part of the page whenever what it shows changed; the browser swaps it
in. No JavaScript comes from outside the app: Mermaid (for diagrams) is vendored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from jinja2 import Environment, PackageLoader, select_autoescape
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durableflow.admin.formatting import format_seconds, format_time
from durableflow.admin.records import RUN_STATUSES
from durableflow.errors import (
    ArtefactNotFound,
    ConfigurationError,
    DurableFlowError,
    RunActionRefused,
    RunFinished,
    RunNotFound,
    ScheduleNotFound,
)
from durableflow.web.actions import SCHEDULE_ACTIONS, ActionResult, run_action
from durableflow.web.security import (
    COOKIE,
    CSRF_FIELD,
    SECURITY_HEADERS,
    Access,
    Guard,
)
from durableflow.web.views import (
    RunFilters,
    link_target,
    load_graphs_view,
    load_lineage_view,
    load_run_view,
    load_runs_view,
)

logger = logging.getLogger("durableflow.web")

TOKEN_ENV = "DURABLEFLOW_UI_TOKEN"  # noqa: S105 - the variable's name, not a secret
LIVE_INTERVAL = 1.0  # seconds between checks of a live page
KEEPALIVE_SECONDS = 15.0  # a keep-alive comment on a stream idle this long


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
            link=lambda cell: _link(request, cell),
            access=access,
            csrf_field=CSRF_FIELD,
            title=self.title,
            # What the last action said (see _answer), shown once by the page it lands on.
            notice=request.query_params.get("notice"),
            notice_failed=request.query_params.get("failed") == "1",
            **context,
        )
        return HTMLResponse(page, status_code=status_code)

    def _fragment(self, template: str, request: Request, **context: Any) -> str:
        return self.templates.get_template(template).render(
            request=request,
            url=lambda name, **params: _path(request, name, **params),
            link=lambda cell: _link(request, cell),
            access=self.guard.access(request),
            csrf_field=CSRF_FIELD,
            **context,
        )

    # -- pages -------------------------------------------------------------------------

    async def runs_page(self, request: Request) -> Response:
        filters = RunFilters()
        try:
            filters = RunFilters.from_query(request.query_params)
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
        live = (
            _path(request, "live_runs")
            + "?"
            + urlencode([*filters.query(), ("seen", _digest(view.fingerprint))])
        )
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
            live_url=_path(request, "live_run", run_id=str(view.run.id))
            + "?"
            + urlencode({"seen": _digest(view.fingerprint)}),
        )

    async def workers_page(self, request: Request) -> Response:
        workers = await self.flow.list_workers()
        leader = await self.flow.leader()
        return self._render(request, "workers.html", workers=workers, leader=leader)

    async def queues_page(self, request: Request) -> Response:
        queues = await self.flow.list_queues()
        return self._render(request, "queues.html", queues=queues)

    async def schedules_page(self, request: Request) -> Response:
        schedules = await self.flow.list_schedules()
        return self._render(request, "schedules.html", schedules=schedules)

    async def graphs_page(self, request: Request) -> Response:
        """Every graph, or one (``?name=...&version=...``: a graph run's page links here)."""
        name = request.query_params.get("name") or None
        version_text = request.query_params.get("version") or None
        version = None
        if version_text is not None:
            if not (version_text.isascii() and version_text.isdigit()):  # isdigit() alone takes '²'
                return self._render(request, "error.html", 400, message="version is a number")
            version = int(version_text)
        graphs = await load_graphs_view(self.flow, name=name, version=version)
        if name is not None and not graphs:
            what = f"{name!r}" + (f" version {version}" if version is not None else "")
            return self._render(request, "error.html", 404, message=f"no graph {what}")
        return self._render(request, "graphs.html", graphs=graphs, chosen=name is not None)

    async def lineage_page(self, request: Request) -> Response:
        key = request.query_params.get("key", "")
        try:
            view = await load_lineage_view(self.flow, key)
        except ArtefactNotFound as exc:
            return self._render(request, "error.html", 404, message=str(exc))
        except DurableFlowError as exc:  # not a valid key
            return self._render(request, "error.html", 400, message=str(exc))
        return self._render(request, "lineage.html", view=view)

    # -- live updates ------------------------------------------------------------------

    async def live_runs(self, request: Request) -> Response:
        try:
            filters = RunFilters.from_query(request.query_params)
        except ConfigurationError as exc:
            return PlainTextResponse(str(exc), status_code=400)

        async def produce() -> tuple[Any, str]:
            view = await load_runs_view(self.flow, filters)
            return view.fingerprint, self._fragment("_runs_rows.html", request, view=view)

        return self._stream(produce, request.query_params.get("seen"))

    async def live_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        async def produce() -> tuple[Any, str]:
            view = await load_run_view(self.flow, run_id)
            return view.fingerprint, self._fragment("_run_body.html", request, view=view)

        return self._stream(produce, request.query_params.get("seen"))

    def _stream(
        self, produce: Callable[[], Awaitable[tuple[Any, str]]], seen: str | None
    ) -> Response:
        """Server-sent events (sse-starlette): the page part again each time its
        fingerprint changes, and a keep-alive comment while nothing does.

        ``seen`` is the digest of the fingerprint the page was rendered with: until the
        part changes, nothing is sent (a swap would only wipe what the operator types).
        """

        async def events() -> AsyncIterator[ServerSentEvent]:
            last: Any = seen
            while True:
                try:
                    fingerprint, html = await produce()
                    fingerprint = _digest(fingerprint)
                except RunNotFound:
                    yield ServerSentEvent("this run no longer exists", event="gone")
                    return
                except DurableFlowError as exc:
                    logger.warning("live update failed: %s", exc, extra={"event": "ui_live_failed"})
                    yield ServerSentEvent(str(exc), event="problem")
                    fingerprint, html = last, None
                if html is not None and fingerprint != last:
                    last = fingerprint
                    yield ServerSentEvent(html, event="update")
                await asyncio.sleep(LIVE_INTERVAL)

        return EventSourceResponse(
            events(),
            ping=KEEPALIVE_SECONDS,
            ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
            headers={"cache-control": "no-store"},
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

    async def _authorized_form(self, request: Request) -> tuple[Access, dict[str, str]] | Response:
        """The POSTed form of an operator who may act, or the 403 that refuses the request."""
        access = self.guard.access(request)
        if not self.guard.same_origin(request):
            return self._refuse(access, "cross-origin request refused")
        if not access.authorized:
            return self._refuse(access)
        form = await request.form()
        values = {key: str(value) for key, value in form.items()}
        if not self.guard.csrf_valid(access, values.get(CSRF_FIELD)):
            return self._refuse(access, "missing or wrong CSRF token: reload the page")
        return access, values

    async def act(self, request: Request) -> Response:
        checked = await self._authorized_form(request)
        if isinstance(checked, Response):
            return checked
        access, values = checked
        action = run_action(request.path_params["action"])
        if action is None:
            return PlainTextResponse("no such action", status_code=404)
        run_id = request.path_params["run_id"]
        back = _path(request, "run", run_id=run_id) if _is_uuid(run_id) else _path(request, "runs")
        try:
            run = await self.flow.describe_run(run_id)
            if not action.applies(run):  # the page hides the button; a script can still post
                raise RunActionRefused(
                    run.id,
                    action=action.name,
                    status=run.status,
                    reason=f"{action.label} does not apply to a {run.status} run",
                )
            outcome = await action.perform(self.flow, run, values)
        except RunNotFound as exc:
            return self._answer(access, back, str(exc), 404)
        except (RunActionRefused, RunFinished) as exc:
            return self._answer(access, back, str(exc), 409)
        except (DurableFlowError, ValueError) as exc:  # a value the operator typed
            return self._answer(access, back, str(exc), 400)
        result = outcome if isinstance(outcome, ActionResult) else ActionResult(outcome)
        logger.info(
            "run %s: %s from the web UI: %s",
            run_id,
            action.name,
            result.message,
            extra={"event": "ui_action", "run_id": str(run_id), "action": action.name},
        )
        if result.run_id is not None:  # a new run (fork, replay): show it
            back = _path(request, "run", run_id=str(result.run_id))
        return self._answer(access, back, result.message, 200, run_id=result.run_id)

    async def act_on_schedule(self, request: Request) -> Response:
        checked = await self._authorized_form(request)
        if isinstance(checked, Response):
            return checked
        access, values = checked
        perform = SCHEDULE_ACTIONS.get(request.path_params["action"])
        if perform is None:
            return PlainTextResponse("no such action", status_code=404)
        name = values.get("name", "")
        back = _path(request, "schedules")
        try:
            message = await perform(self.flow, name)
        except ScheduleNotFound as exc:
            return self._answer(access, back, str(exc), 404)
        except DurableFlowError as exc:
            return self._answer(access, back, str(exc), 400)
        logger.info(
            "schedule %s: %s from the web UI",
            name,
            request.path_params["action"],
            extra={"event": "ui_action", "schedule": name, "action": request.path_params["action"]},
        )
        return self._answer(access, back, message, 200)

    def _answer(
        self, access: Access, back: str, message: str, status: int, *, run_id: Any = None
    ) -> Response:
        if access.via_header:  # an API client: say it in JSON
            body: dict[str, Any] = {"ok": status == 200, "message": message}
            if run_id is not None:
                body["run_id"] = str(run_id)
            return JSONResponse(body, status_code=status)
        query = {"notice": message, **({} if status == 200 else {"failed": "1"})}
        return RedirectResponse(back + "?" + urlencode(query), status_code=303)

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
        if not self.guard.same_origin(request):  # another site must not log operators out
            return PlainTextResponse("cross-origin request refused", status_code=403)
        response = RedirectResponse(_path(request, "runs"), status_code=303)
        response.delete_cookie(COOKIE, path=_root(request))
        return response


def _path(request: Request, name: str, **params: Any) -> str:
    """The path of a route (mount point included): links work behind any host name."""
    return request.url_for(name, **params).path


def _digest(fingerprint: Any) -> str:
    """A short stable digest of a view's fingerprint, to carry in a URL."""
    return hashlib.sha256(repr(fingerprint).encode()).hexdigest()[:24]


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def _link(request: Request, cell: Any) -> str | None:
    """The href of a section cell that is a :class:`SectionLink`, else None."""
    target = link_target(cell)
    if target is None:
        return None
    kind, value = target
    if kind == "run":
        return _path(request, "run", run_id=value)
    return _path(request, "lineage") + "?" + urlencode({"key": value})


def _json_text(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


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
        Route("/queues", ui.queues_page, name="queues"),
        Route("/schedules", ui.schedules_page, name="schedules"),
        Route("/graphs", ui.graphs_page, name="graphs"),
        Route("/lineage", ui.lineage_page, name="lineage"),
        Route("/live/runs", ui.live_runs, name="live_runs"),
        Route("/live/runs/{run_id}", ui.live_run, name="live_run"),
        Route("/runs/{run_id}/actions/{action}", ui.act, methods=["POST"], name="run_action"),
        Route(
            "/schedules/actions/{action}",
            ui.act_on_schedule,
            methods=["POST"],
            name="schedule_action",
        ),
        Route("/login", ui.login, methods=["GET", "POST"], name="login"),
        Route("/logout", ui.logout, methods=["POST"], name="logout"),
        Mount("/static", StaticFiles(packages=[("durableflow.web", "static")]), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_SecurityHeaders)])
    app.state.admin_ui = ui
    return app
