"""The server: its routes, the key it asks for, and a shutdown that keeps what runs finished.

One engine serves every request, so provider limits, the response cache and the run records
are shared by all of them. Stopping (:meth:`Server.stop`) closes the listening socket first,
lets the runs in flight finish within a grace period, cancels the rest (the engine records what
they finished, as Ctrl-C does for ``flowengine run``), then closes the engine.

With an API key, every route but the static files (the web page, which holds no data and which
a browser loads without headers) needs ``Authorization: Bearer <key>``, compared in constant
time; the key appears in no log, error or response.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Middleware

from flowengine.language.workflow import Workflow
from flowengine.run.engine import Engine
from flowengine.web import openai_api, pages, rest_api
from flowengine.web.http import MAX_BODY, HttpError
from flowengine.web.runs import Runs
from flowengine.web.state import APP, State

log = logging.getLogger("flowengine.web")

STATIC = Path(__file__).resolve().parent / "static"

#: Seconds the runs in flight get to finish when the server stops, before they are cancelled.
GRACE_S = 10.0

#: Seconds the requests still open get to end once the runs have: streams of ended runs.
SHUTDOWN_S = 5.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_app(
    workflows: dict[str, Workflow],
    engine: Engine,
    *,
    api_key: str | None = None,
    grace: float = GRACE_S,
) -> web.Application:
    """The server's application over ``engine``, which it closes when it is cleaned up."""
    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[_errors, *([_auth(api_key)] if api_key else [])]
    )
    state = State(workflows, engine, Runs(engine))
    app[APP] = state
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_get("/api/workflows", rest_api.list_workflows)
    app.router.add_post("/api/runs", rest_api.start_run)
    app.router.add_get("/api/runs", rest_api.list_recent)
    app.router.add_get("/api/runs/{run_id}", rest_api.show_run)
    app.router.add_get("/api/runs/{run_id}/events", rest_api.run_events)
    app.router.add_get("/api/stats", rest_api.stats)
    app.router.add_get("/runs/{run_id}", pages.run_page)
    app.router.add_get("/", _index)
    app.router.add_static("/static/", STATIC)

    async def stop_runs(_: web.Application) -> None:
        await state.runs.shutdown(grace)

    async def close_engine(_: web.Application) -> None:
        await engine.aclose()

    app.on_shutdown.append(stop_runs)
    app.on_cleanup.append(close_engine)
    return app


async def _index(_: web.Request) -> web.StreamResponse:
    index = STATIC / "index.html"
    if not index.is_file():
        raise HttpError(404, "no web page is installed; the API is under /api/ and /v1/")
    return web.FileResponse(index)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error in OpenAI's JSON shape; an unexpected one is logged, not shown."""
    try:
        return await handler(request)
    except HttpError as exc:
        return exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = "not_found" if exc.status == 404 else None
        return HttpError(
            exc.status, f"{exc.reason}: {request.method} {request.path}", code=code
        ).response()
    except Exception as exc:
        log.error("%s %s failed: %s: %s", request.method, request.path, type(exc).__name__, exc)
        log.debug("the error's traceback", exc_info=True)
        error = HttpError(500, "internal server error", type="server_error", code="internal")
        return error.response()


def _auth(key: str) -> Middleware:
    expected = f"Bearer {key}".encode()

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/" or request.path.startswith("/static/"):
            return await handler(request)
        given = request.headers.get("Authorization")
        if given is None:
            raise HttpError(
                401,
                "no API key: send the header `Authorization: Bearer <key>`",
                type="authentication_error",
                code="missing_api_key",
            )
        if not hmac.compare_digest(given.encode("utf-8", "replace"), expected):
            raise HttpError(
                401, "incorrect API key", type="authentication_error", code="invalid_api_key"
            )
        return await handler(request)

    return auth


class Server:
    """The application, listening on ``host:port`` (port 0: any free one)."""

    def __init__(self, app: web.Application, *, access_log: logging.Logger | None = None) -> None:
        self.app = app
        # Handlers see their runs through to the end, so a slow client never cancels a run;
        # the grace period bounds the wait for them at shutdown.
        self.runner = web.AppRunner(
            app, access_log=access_log, handle_signals=False, shutdown_timeout=SHUTDOWN_S
        )

    async def start(self, host: str, port: int) -> str:
        """Listen; the address it listens on, ``http://host:port``."""
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        bound = self.runner.addresses[-1][1]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{bound}"

    async def stop(self) -> None:
        """Stop listening, let the runs finish within the grace period, close the engine."""
        await self.runner.cleanup()
