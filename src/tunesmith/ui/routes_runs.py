"""The Runs and Compare pages' API: the list, one run, its live logbook, Stop, Resume, files."""

from __future__ import annotations

import asyncio
import json
import shutil

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, StreamingResponse

from tunesmith.rundir import RunDir
from tunesmith.ui.forms import check_form, recipe_yaml
from tunesmith.ui.jobs import is_active
from tunesmith.ui.security import inside
from tunesmith.ui.workspace import logbook, run_row

LIVE_POLL_S = 0.25  # how often a live stream looks for new lines (the charts lag by about this)
ACTIVE = ("queued", "running")
LOGS = ("metrics", "eval", "events")


def runs_router(ctx) -> APIRouter:
    """Routes over ``ctx.workspace`` and ``ctx.jobs``."""
    router = APIRouter(prefix="/api")
    ws = ctx.workspace

    @router.get("/runs")
    def list_runs():
        return {"runs": ws.list_runs()}

    @router.post("/runs", status_code=201)
    async def start_run(request: Request):
        body = await ctx.read_json(request)
        config, raw, problems = check_form(body.get("values") or {}, ws.root)
        if problems:
            raise HTTPException(422, {"errors": [{"key": k, "message": m} for k, m in problems]})
        folder = ws.run_dir(config.name)
        if is_active(RunDir(folder).read_job()):
            raise HTTPException(409, f"The run {config.name!r} is queued or running; stop it first.")
        if folder.exists() and any(folder.iterdir()):
            if not body.get("overwrite"):
                raise HTTPException(409, f"A run named {config.name!r} already exists. Tick 'replace' to train "
                                         "it again from scratch, or change the name.")
            shutil.rmtree(folder)
        recipe = ws.recipes / f"{config.name}.yaml"
        recipe.write_text(recipe_yaml(raw), encoding="utf-8")
        ctx.jobs.submit(folder, ["train", str(recipe), "--output-dir", str(folder), "--no-progress"],
                        {"kind": "train", "task": config.task, "method": config.method.type})
        return {"name": config.name}

    @router.get("/runs/{name}")
    def run_detail(name: str):
        return ws.run_detail(name)

    @router.post("/runs/{name}/stop")
    def stop(name: str):
        return {"result": ctx.jobs.stop(ws.run_dir(name))}

    @router.post("/runs/{name}/resume", status_code=201)
    def resume(name: str):
        folder = ws.run_dir(name)
        row = run_row(folder)
        if row["status"] in ACTIVE:
            raise HTTPException(409, f"The run {name!r} is {row['status']}.")
        if not (folder / "config.yaml").is_file():
            raise HTTPException(409, f"The run {name!r} never started, so there is nothing to resume.")
        ctx.jobs.submit(folder, ["train", str(folder / "config.yaml"), "--output-dir", str(folder), "--resume",
                                 "--no-progress"], {"kind": "train", "task": row["task"], "method": row["method"]})
        return {"name": name}

    @router.get("/runs/{name}/files/{path:path}")
    def run_file(name: str, path: str):
        folder = ws.run_dir(name)
        target = inside(folder, path, "file")
        if not target.is_file():
            raise HTTPException(404, f"{path!r} is not a file of run {name!r}.")
        return FileResponse(target)

    @router.get("/runs/{name}/live")
    async def live(name: str, request: Request, metrics: int = 0, eval: int = 0, events: int = 0):
        """Server-sent events: new logbook lines as they are written, the status when it
        changes, and ``end`` once the run is no longer queued or running."""
        folder = ws.run_dir(name)
        offsets = {"metrics": metrics, "eval": eval, "events": events}

        sizes = {log: 0 for log in LOGS}

        async def stream():
            last_status = None
            while True:
                sent = False
                for log in LOGS:
                    path = folder / f"{log}.jsonl"
                    size = path.stat().st_size if path.is_file() else 0
                    if size < sizes[log]:  # a resume or a guard rollback rewound the file
                        offsets[log] = 0
                        yield f"event: reset\ndata: {json.dumps(log)}\n\n"
                    sizes[log] = size
                    rows = logbook(folder, log, offsets[log])
                    if rows:
                        offsets[log] += len(rows)
                        yield f"event: {log}\ndata: {json.dumps(rows)}\n\n"
                        sent = True
                row = run_row(folder)
                if row["status"] != last_status:  # only changes: the page redraws its buttons then
                    last_status = row["status"]
                    yield f"event: status\ndata: {json.dumps(row)}\n\n"
                if row["status"] not in ACTIVE and not sent:
                    yield "event: end\ndata: {}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(LIVE_POLL_S)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @router.get("/compare")
    def compare(runs: str):
        """For each named run: its row, final metrics and loss / eval curves."""
        out = []
        for name in [n for n in runs.split(",") if n][:12]:
            folder = ws.run_dir(name)
            summary = RunDir(folder).read_summary()
            out.append({**run_row(folder), "eval_after": summary.get("eval_after") or {},
                        "eval_before": summary.get("eval_before") or {}, "train": summary.get("train") or {},
                        "trainable_params": summary.get("trainable_params"),
                        "loss": [[r.get("step"), r.get("loss")] for r in logbook(folder, "metrics") if "loss" in r],
                        "eval": logbook(folder, "eval")})
        return {"runs": out}

    return router
