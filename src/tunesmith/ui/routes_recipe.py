"""The New-run and Data pages' API: the form's schema, checking and previewing a recipe,
YAML upload, the memory plan, and data files (upload, list, inspect)."""

from __future__ import annotations

import yaml
from fastapi import APIRouter, HTTPException, Request

from tunesmith.errors import TunesmithError
from tunesmith.ui.forms import check_form, form_schema, recipe_to_values, recipe_yaml
from tunesmith.ui.security import inside, safe_name

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".txt")
MAX_RECIPE_BYTES = 256_000


def _errors(problems) -> list[dict]:
    return [{"key": key, "message": message} for key, message in problems]


def recipe_router(ctx) -> APIRouter:
    router = APIRouter(prefix="/api")
    ws = ctx.workspace

    @router.get("/schema")
    def schema():
        return form_schema()

    @router.post("/recipe/check")
    async def check(request: Request):
        """The form's problems (each keyed by field, in the CLI's words) and its YAML."""
        values = (await ctx.read_json(request)).get("values") or {}
        _, raw, problems = check_form(values, ws.root)
        return {"errors": _errors(problems), "yaml": recipe_yaml(raw)}

    @router.post("/recipe/upload")
    async def upload(request: Request):
        """A YAML recipe -> form values (and its problems, so the form shows them at once)."""
        text = (await ctx.guard.read_body(request, MAX_RECIPE_BYTES)).decode("utf-8", "replace")
        try:
            from tunesmith.config.load import parse_yaml

            raw = parse_yaml(text)
        except yaml.YAMLError as exc:
            raise HTTPException(400, f"The file is not valid YAML: {exc}") from None
        if not isinstance(raw, dict):
            raise HTTPException(400, "A recipe is a mapping of sections (name, task, model, data, ...).")
        values = recipe_to_values(raw)
        _, _, problems = check_form(values, ws.root)
        return {"values": values, "errors": _errors(problems)}

    @router.post("/plan")
    async def plan(request: Request):
        """The memory and time plan of the form's recipe (``tunesmith plan``), with its fit."""
        values = (await ctx.read_json(request)).get("values") or {}
        config, _, problems = check_form(values, ws.root)
        if problems:
            raise HTTPException(422, {"errors": _errors(problems)})
        return await ctx.in_thread(lambda: _plan(config))

    @router.get("/data")
    def data_files():
        files = [p for p in sorted(ws.data.rglob("*")) if p.is_file() and p.suffix in DATA_SUFFIXES]
        return {"files": [{"path": str(p.relative_to(ws.root)), "bytes": p.stat().st_size} for p in files]}

    @router.put("/data/{filename}", status_code=201)
    async def upload_data(filename: str, request: Request):
        name = safe_name(filename, "file name")
        if not name.endswith(DATA_SUFFIXES):
            raise HTTPException(400, f"{name!r}: data files end in {', '.join(DATA_SUFFIXES)}.")
        body = await ctx.guard.read_body(request)
        target = inside(ws.data, name, "file")
        tmp = target.with_name(f".{name}.part")
        tmp.write_bytes(body)
        tmp.replace(target)
        return {"path": str(target.relative_to(ws.root)), "bytes": len(body)}

    @router.post("/data/inspect")
    async def inspect(request: Request):
        """``tunesmith data inspect`` of one workspace file: rejects by line and reason,
        duplicates, label balance, lengths (with the histogram's numbers)."""
        body = await ctx.read_json(request)
        path = inside(ws.root, str(body.get("path") or ""), "data file")
        if not path.is_file():
            raise HTTPException(404, f"{body.get('path')!r} is not a file in the workspace.")
        shape = body.get("shape") or None
        if shape not in (None, "classification", "chat"):
            raise HTTPException(400, f"Unknown shape {shape!r}: classification or chat.")

        def run():
            from tunesmith.data.inspect import inspect_file

            try:
                return inspect_file(str(path), shape)
            except TunesmithError as exc:
                raise HTTPException(400, str(exc)) from None

        report = await ctx.in_thread(run)
        report["file"] = str(path.relative_to(ws.root))
        return report

    return router


def _plan(config) -> dict:
    from tunesmith.plan.advisor import advise, render_advice
    from tunesmith.plan.planner import make_plan
    from tunesmith.plan.render import render_plan

    try:
        plan = make_plan(config)
        advice = advise(config, plan)
    except TunesmithError as exc:
        raise HTTPException(400, str(exc)) from None
    return {"plan": plan.as_dict(), "text": render_plan(plan), "advice": render_advice(advice)}
