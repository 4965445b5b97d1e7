"""``tunesmith ui``: the web UI's FastAPI app.

One page (``assets/ui/index.html`` and its scripts, all vendored: nothing is fetched from
a CDN) drives the JSON API of the routers: New run and Data (``routes_recipe``), Runs and
Compare (``routes_runs``), Playground (``playground``, over ``tunesmith serve``'s API),
Review and Export (``routes_tools``). Runs and exports are separate ``tunesmith``
processes (``jobs``); all state lives in the workspace's folders (``workspace``), so a
restarted UI shows exactly what it showed before. ``security`` is checked on every request.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from tunesmith.ui.jobs import JobQueue
from tunesmith.ui.security import Guard, is_loopback, make_token
from tunesmith.ui.workspace import Workspace

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "ui"
MAX_JSON_BYTES = 1_000_000


@dataclass
class UIContext:
    """What every router shares."""

    workspace: Workspace
    jobs: JobQueue
    guard: Guard
    playground: object | None = None

    async def read_json(self, request: Request) -> dict:
        """The request's JSON object body (400 when it is not one, 413 when too large)."""
        body = await self.guard.read_body(request, MAX_JSON_BYTES)
        try:
            data = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise HTTPException(400, "The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise HTTPException(400, "The body must be a JSON object.")
        return data

    async def in_thread(self, fn):
        """Run blocking work (planning, inspecting a file) off the event loop."""
        return await asyncio.to_thread(fn)


def create_app(workspace: str | Path, *, host: str = "127.0.0.1", token: str,
               job_limit: int = 1, max_upload_mb: int = 200, with_playground: bool = True) -> tuple[FastAPI, UIContext]:
    """The UI app over ``workspace``; call ``ctx.jobs.start()`` to run queued jobs."""
    from tunesmith.ui.playground import Playground, playground_router
    from tunesmith.ui.routes_recipe import recipe_router
    from tunesmith.ui.routes_runs import runs_router
    from tunesmith.ui.routes_tools import tools_router

    ws = Workspace(workspace)
    guard = Guard(host, token, max_upload_mb * 1_000_000)
    ctx = UIContext(ws, JobQueue(ws.job_folders, limit=job_limit), guard)
    app = FastAPI(title="Tunesmith UI", docs_url=None, redoc_url=None, openapi_url=None)

    @app.middleware("http")
    async def _guard(request: Request, call_next):
        try:
            guard.check(request)
        except HTTPException as exc:
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    page = (ASSETS / "index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    def index():
        # The token is written into the page only on 127.0.0.1, where the Host check keeps
        # other sites from reading it; elsewhere the user opens /?token=... once.
        return page.replace("{{TOKEN}}", token if guard.loopback else "")

    app.mount("/static", StaticFiles(directory=ASSETS), name="static")
    for router in (recipe_router(ctx), runs_router(ctx), tools_router(ctx)):
        app.include_router(router)
    if with_playground:
        ctx.playground = Playground(token, ws.runs)
        app.include_router(playground_router(ctx))
        app.mount("/serve", ctx.playground.app)
    return app, ctx


def run_ui(workspace: str, host: str, port: int, token: str | None, job_limit: int, max_upload_mb: int) -> None:
    """Serve the UI until Ctrl-C (runs it started keep running; a restart adopts them)."""
    import uvicorn

    from tunesmith.serve.http import uvicorn_config

    token = make_token(host, token)
    app, ctx = create_app(workspace, host=host, token=token, job_limit=job_limit,
                          max_upload_mb=max_upload_mb)
    ctx.jobs.start()
    print(f"Tunesmith UI on http://{host}:{port}/ (workspace {ctx.workspace.root})", flush=True)
    if not is_loopback(host):
        print(f"open http://{host}:{port}/?token=<your token> once; state-changing requests need it", flush=True)
    try:
        uvicorn.Server(uvicorn_config(app, host, port)).run()
    finally:
        ctx.jobs.close()
        if ctx.playground is not None:
            ctx.playground.close()


def serve_in_thread(app: FastAPI, host: str = "127.0.0.1", port: int = 0, protocol=None):
    """Serve ``app`` from a background thread (tests, benchmarks); returns ``(server, url)``.
    Stop it with ``server.should_exit = True``."""
    import socket
    import threading
    import time

    import uvicorn

    from tunesmith.serve.http import uvicorn_config

    if port == 0:
        with socket.socket() as probe:
            probe.bind((host, 0))
            port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn_config(app, host, port, protocol))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    return server, f"http://{host}:{port}"
