"""The Review and Export pages' API.

Review: a blind A/B review is made from chat runs' saved answers (``predictions.jsonl``
holds each held-out prompt's trained and base answers), written by
:func:`tunesmith.eval.review.export_review` into ``reviews/<id>/``. The page shows the
blinded items (Answer 1 / Answer 2, never the systems); each vote is stored at once in
the page's own file format (``review-<export_id>-<reviewer>.json``), and the results are
:func:`tunesmith.eval.review_import.import_reviews` of those files: the same numbers as the
CLI's ``eval review-import``.

Export: ``tunesmith export`` as a queued job into ``runs/<name>/export-<format>/``; the
page shows each export's gate results from its ``export.json``.
"""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, HTTPException, Request

from tunesmith.errors import TunesmithError
from tunesmith.eval.review import CHOICES
from tunesmith.rundir import RunDir
from tunesmith.storage import atomic_write_text
from tunesmith.ui.jobs import is_active
from tunesmith.ui.security import inside, safe_name
from tunesmith.ui.workspace import EXPORT_PREFIX

EXPORT_FORMATS = ("merged", "onnx", "int8", "gguf", "pruned")
VOTES_FORMAT = "tunesmith-review-votes"


def tools_router(ctx) -> APIRouter:
    router = APIRouter(prefix="/api")
    ws = ctx.workspace

    # ---- review ---------------------------------------------------------------------------
    def review_dir(review_id: str):
        folder = inside(ws.reviews, safe_name(review_id, "review id"), "review")
        if not (folder / "key.json").is_file():
            raise HTTPException(404, f"No review {review_id!r} in this workspace.")
        return folder

    @router.get("/reviews")
    def reviews():
        out = []
        for folder in sorted(ws.reviews.iterdir()):
            meta = folder / "review-meta.json"
            if meta.is_file():
                out.append(json.loads(meta.read_text(encoding="utf-8")))
        return {"reviews": out}

    @router.post("/reviews", status_code=201)
    async def create_review(request: Request):
        """Body: ``{"run": name, "against": name | "base", "limit": n}``."""
        body = await ctx.read_json(request)
        run = safe_name(str(body.get("run") or ""), "run name")
        against = str(body.get("against") or "base")
        items = _review_items(ws, run, against, int(body.get("limit") or 50))
        from tunesmith.eval.review import export_review

        names = ("base model" if against == "base" else against, run)
        review_id = f"{run}-vs-{'base' if against == 'base' else against}"
        folder = inside(ws.reviews, safe_name(review_id[:64], "review id"), "review")
        try:
            manifest = export_review(items, folder, names, seed=None, title=f"Blind review: {len(items)} prompts")
        except TunesmithError as exc:
            raise HTTPException(400, str(exc)) from None
        meta = {"id": folder.name, "export_id": manifest["export_id"], "items": manifest["n_items"],
                "created_at": time.time()}
        atomic_write_text(folder / "review-meta.json", json.dumps(meta))
        return meta

    @router.get("/reviews/{review_id}")
    def review_items(review_id: str):
        """The blinded items (what reviewers see) and the export id."""
        folder = review_dir(review_id)
        tasks = json.loads((folder / "labelstudio.json").read_text(encoding="utf-8"))
        items = [{k: t["data"].get(k) for k in ("item_id", "prompt", "answer_1", "answer_2", "reference")}
                 for t in tasks]
        meta = json.loads((folder / "review-meta.json").read_text(encoding="utf-8"))
        return {**meta, "items": items, "choices": list(CHOICES)}

    @router.post("/reviews/{review_id}/votes")
    async def vote(review_id: str, request: Request):
        """Body: ``{"reviewer", "item_id", "choice", "note"}``; a second vote on an item replaces the first."""
        folder = review_dir(review_id)
        body = await ctx.read_json(request)
        reviewer = safe_name(str(body.get("reviewer") or ""), "reviewer name")
        choice = body.get("choice")
        if choice not in CHOICES:
            raise HTTPException(400, f"choice must be one of {', '.join(CHOICES)}, not {choice!r}.")
        meta = json.loads((folder / "review-meta.json").read_text(encoding="utf-8"))
        path = folder / f"review-{meta['export_id']}-{reviewer}.json"
        saved = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"items": []}
        items = [e for e in saved["items"] if e.get("item_id") != body.get("item_id")]
        items.append({"item_id": body.get("item_id"), "choice": choice, "note": str(body.get("note") or ""),
                      "ratings": {}})
        atomic_write_text(path, json.dumps({"format": VOTES_FORMAT, "version": 1, "export_id": meta["export_id"],
                                            "reviewer": reviewer, "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                            "items": items}, ensure_ascii=False))
        return {"votes": len(items)}

    @router.get("/reviews/{review_id}/results")
    def results(review_id: str):
        folder = review_dir(review_id)
        files = sorted(folder.glob("review-*-*.json"))
        files = [f for f in files if f.name != "review-meta.json"]
        if not files:
            return {"report": None}
        from tunesmith.eval.review_import import import_reviews

        try:
            return {"report": import_reviews(files, folder / "key.json")}
        except TunesmithError as exc:
            raise HTTPException(400, str(exc)) from None

    # ---- export -----------------------------------------------------------------------------
    @router.post("/runs/{name}/export", status_code=201)
    async def export(name: str, request: Request):
        """Body: ``{"to": merged|onnx|int8|gguf|pruned, "quant": f16|q8_0}``, and for pruned
        ``sparsity``, ``structure``, ``recover_steps``, ``max_drop``: queued as a job."""
        body = await ctx.read_json(request)
        to = body.get("to")
        if to not in EXPORT_FORMATS:
            raise HTTPException(400, f"Export to one of {', '.join(EXPORT_FORMATS)}, not {to!r}.")
        extra = _prune_args(body) if to == "pruned" else []
        run = ws.run_dir(name)
        if not (run / "final").is_dir():
            raise HTTPException(409, f"The run {name!r} has no final model yet.")
        folder = run / f"{EXPORT_PREFIX}{to}"
        if is_active(RunDir(folder).read_job()):
            raise HTTPException(409, f"The {to} export of {name!r} is already queued or running.")
        if folder.exists():
            import shutil

            shutil.rmtree(folder)  # an export is re-made from final/, never appended to
        args = ["export", str(run), "--to", to, "--out", str(folder), *extra]
        if to == "gguf":
            args += ["--quant", body.get("quant") if body.get("quant") in ("f16", "q8_0") else "f16"]
        ctx.jobs.submit(folder, args, {"kind": "export", "format": to})
        return {"format": to}

    return router


def _prune_args(body: dict) -> list[str]:
    """The pruning options of an export request as CLI arguments, each checked (400 names it)."""
    def number(key: str, default, low: float, high: float, kind=float):
        value = body.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                or (kind is int and value != int(value)):
            raise HTTPException(400, f"{key} must be a {kind.__name__} from {low} to {high}, not {value!r}.")
        return kind(value)

    sparsity = number("sparsity", None, 0.01, 0.99)
    structure = body.get("structure", "ffn")
    if structure not in ("ffn", "heads", "both"):
        raise HTTPException(400, f"structure must be ffn, heads or both, not {structure!r}.")
    return ["--sparsity", str(sparsity), "--structure", structure,
            "--recover-steps", str(number("recover_steps", 0, 0, 100_000, int)),
            "--max-drop", str(number("max_drop", 0.02, 0, 100))]


def _review_items(ws, run: str, against: str, limit: int) -> list[dict]:
    """Blind-review items from chat runs' saved answers: ``run``'s against the base model's
    (``against == "base"``) or against another run's, on the prompts both answered."""
    rows = RunDir(ws.run_dir(run)).predictions()
    if not rows or "prompt" not in rows[0]:
        raise HTTPException(409, f"The run {run!r} saved no chat answers (predictions.jsonl with prompts): "
                                 "only chat runs with eval.generate can be reviewed.")
    if against == "base":
        other = {r["id"]: r.get("prediction_before") for r in rows}
    else:
        other = {r["id"]: r.get("prediction") for r in RunDir(ws.run_dir(safe_name(against, "run name"))).predictions()}
    items = [{"id": str(r["id"]), "prompt": r["prompt"], "answer_a": other[r["id"]], "answer_b": r["prediction"],
              "reference": r.get("reference")} for r in rows if other.get(r["id"]) is not None]
    if not items:
        raise HTTPException(409, f"{run!r} and {against!r} answered no prompt in common.")
    return items[:max(1, limit)]

