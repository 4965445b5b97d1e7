"""The Playground: chat with base models and trained runs side by side, streamed.

The UI holds one serve :class:`~tunesmith.serve.registry.Registry` and
:class:`~tunesmith.serve.engine.Engine` and mounts the OpenAI-compatible API of
``tunesmith serve`` under ``/serve`` (token as its bearer key), so the page streams from
``/serve/v1/chat/completions`` exactly as any OpenAI client would, and adapters of one base
share it in memory. Models load on first use: a run's adapter, or a run's base model as is.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request

from tunesmith.errors import TunesmithError
from tunesmith.rundir import has_model_meta, read_model_meta
from tunesmith.ui.security import inside, safe_name


class Playground:
    """The served models of one UI (loaded lazily, kept until the UI stops)."""

    def __init__(self, token: str, runs_root: Path, max_batch: int = 8):
        from tunesmith.serve.app import create_app
        from tunesmith.serve.engine import Engine
        from tunesmith.serve.registry import Registry

        self.registry = Registry()
        self.engine = Engine(self.registry, max_batch=max_batch)
        self.app = create_app(self.registry, self.engine, api_key=token, allowed_dirs=[runs_root])

    def close(self) -> None:
        self.engine.close()

    async def load(self, loader) -> None:
        await asyncio.wrap_future(self.engine.run_on_worker(loader))


def chat_runs(ws) -> list[dict]:
    """Completed causal-LM runs with a final model, and each one's base."""
    out = []
    for row in ws.list_runs():
        final = ws.runs / row["name"] / "final"
        if row["status"] == "completed" and has_model_meta(final):
            meta = read_model_meta(final)
            if meta.get("task") == "causal_lm":
                out.append({"run": row["name"], "method": meta.get("method"), "base": meta.get("base_model")})
    return out


def base_id(spec: str) -> str:
    """The model id a base is served under (what the registry names it)."""
    return spec if spec.startswith("builtin:") or "/" not in spec or not Path(spec).exists() else Path(spec).name


def playground_router(ctx) -> APIRouter:
    router = APIRouter(prefix="/api/playground")
    ws = ctx.workspace

    @router.get("/models")
    def models():
        runs = chat_runs(ws)
        bases = sorted({r["base"] for r in runs if r["base"]})
        return {"runs": runs, "bases": [{"spec": b, "id": base_id(b)} for b in bases],
                "loaded": ctx.playground.registry.names()}

    @router.post("/load")
    async def load(request: Request):
        """Body ``{"run": name}`` (its adapter) or ``{"base_of": name}`` (the run's base as is).
        Returns the model id to chat with."""
        body = await ctx.read_json(request)
        registry = ctx.playground.registry
        if body.get("run"):
            name = safe_name(str(body["run"]), "run name")
            folder = ws.run_dir(name)
            if registry.get(name) is None:
                await _load(ctx, lambda: registry.add_run(name, folder))
            return {"id": name}
        name = safe_name(str(body.get("base_of") or ""), "run name")
        final = ws.run_dir(name) / "final"
        if not has_model_meta(final):
            raise HTTPException(404, f"The run {name!r} has no final model.")
        spec = read_model_meta(final).get("base_model", "")
        if not spec.startswith("builtin:") and Path(spec).exists():
            spec = str(inside(ws.root, spec, "base model"))  # a local base must lie in the workspace
        model_id = base_id(spec)
        if registry.get(model_id) is None:
            await _load(ctx, lambda: registry.add_base(spec, model_id))
        return {"id": model_id}

    return router


async def _load(ctx, loader) -> None:
    try:
        await ctx.playground.load(loader)
    except TunesmithError as exc:
        raise HTTPException(400, str(exc)) from None

