"""``tunesmith eval``: evaluate a model on a dataset, optionally against a second model.

TARGET is a run directory, a ``final/`` folder, a merged export or a base model spec.
A chat model answers every prompt (batched decoding) and is scored with BLEU, chrF,
ROUGE, exact match, token F1, the perplexity of the references and answer length; a
classifier gets per-class precision/recall/F1, macro/micro/weighted F1, ROC-AUC, PR-AUC
and calibration; a reward model scores preference pairs (pairwise accuracy, margin,
mean rewards, Bradley-Terry loss). Every number carries a bootstrap 95% interval;
against a second model, each difference carries a paired-bootstrap interval and p-value. The stage writes
``metrics.json``, ``predictions.jsonl`` and ``report.html`` to the output folder.
"""

from __future__ import annotations

import time
from pathlib import Path

from tunesmith.errors import ConfigError, DataError
from tunesmith.eval.decode import DecodeSettings
from tunesmith.eval.generation import GENERATION_METRICS, chat_items, generation_eval, paired_deltas
from tunesmith.eval.targets import Target, base_of, load_target, target_task
from tunesmith.rundir import write_eval_output


def run_eval(target_spec: str, *, data: str | None = None, against: str | None = "auto", out: Path,
             settings: DecodeSettings = DecodeSettings(), metrics: list[str] | None = None, limit: int | None = None,
             on_error: str = "raise", resamples: int = 1000, show_progress: bool = True, judge: str | None = None,
             human: dict | None = None, log=print) -> dict:
    """Evaluate ``target_spec`` and write the results to ``out``; returns metrics.json's content.

    ``against``: "auto" (a chat run's base model; nothing for other targets), "base", a
    model spec, or None. ``judge``: a model (or ``http://host:port/v1#model``) that also
    judges each pair of answers (see :mod:`tunesmith.eval.judge`). ``human``: a
    ``review-import`` report of the same two models, for the scorecard's human row. ``data``: a dataset spec (builtin:NAME or a file); default the
    run's held-out rows (eval_set.jsonl).

    Raises:
        ConfigError / DataError / ModelError: bad arguments, rows or models, in one line.
    """
    import torch

    from tunesmith.train.precision import autocast, usable_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.perf_counter()
    _check_metrics(target_spec, target_task(target_spec), metrics)  # before any model loads
    log(f"loading {target_spec} ...")
    target = load_target(target_spec, device)
    rows, rejects, source = _rows(target, data, on_error)
    if limit:
        rows = rows[:limit]
    log(f"data: {len(rows)} rows from {source}" + (f" ({len(rejects)} invalid rows left out)" if rejects else ""))
    other = _against(target, against, device)
    if judge and (other is None or target.task != "causal_lm"):
        raise ConfigError("--judge compares two chat models' answers.", "Give a chat model and --against OTHER.")
    # A run is re-scored in the precision it was trained and scored in (where this device
    # computes in it natively), so its numbers reproduce the run's; both sides share it.
    precision = usable_precision(target.meta.get("precision"), device)
    result = {"target": target.name, "task": target.task, "data": source, "rows": len(rows),
              "rejected_rows": len(rejects), "against": other.name if other else None, "precision": precision}
    with autocast(torch.device(device), precision):
        own, theirs, deltas = _score(target, other, rows, source, settings, resamples, show_progress, result,
                                     judge, device, log)
    result["metrics"] = _select(own["metrics"], metrics)
    result["notes"] = own.get("notes", [])
    if theirs is not None:
        result["against_metrics"] = _select(theirs["metrics"], metrics)
        result["deltas"] = _select(deltas, metrics)
        result["scorecard"] = _scorecard(target, other, result, human)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    _write(out, result, own, theirs, rejects)
    return result


def _score(target: Target, other: Target | None, rows, source: str, settings, resamples, show_progress,
           result: dict, judge, device, log) -> tuple[dict, dict | None, dict | None]:
    """Both models' metrics on ``rows`` and their paired differences (task-specific parts of
    the result go into ``result``)."""
    if target.task == "classification":
        from tunesmith.eval.classify import classification_deltas, classification_eval

        own = classification_eval(target, rows, resamples=resamples, seed=settings.seed)
        theirs = classification_eval(other, rows, resamples=resamples, seed=settings.seed) if other else None
        deltas = classification_deltas(theirs, own, resamples, settings.seed) if other else None
        result.update({k: own[k] for k in ("labels", "per_class", "confusion_matrix", "top_confusions",
                                           "reliability")})
    elif target.task == "reward":
        from tunesmith.eval.reward_eval import reward_deltas, reward_eval

        own = reward_eval(target, rows, resamples=resamples, seed=settings.seed)
        theirs = reward_eval(other, rows, resamples=resamples, seed=settings.seed) if other else None
        deltas = reward_deltas(theirs, own, resamples, settings.seed) if other else None
    else:
        items = chat_items(rows)
        if not items:
            raise DataError(f"{source} has no chat with a user turn to answer.", "Pass chat rows with --data.")
        own = _answer(target, items, settings, resamples, show_progress, log)
        theirs = _answer(other, items, settings, resamples, show_progress, log) if other else None
        deltas = paired_deltas(theirs["predictions"], own["predictions"], resamples, settings.seed) if other else None
        result["decoding"] = settings.describe()
        if judge:
            result["judge"] = _judge(judge, items, own, theirs, device, log)
    return own, theirs, deltas


def _answer(target: Target, items, settings, resamples, show_progress, log) -> dict:
    from tqdm.auto import tqdm

    log(f"answering {len(items)} prompts with {target.name} ...")
    with tqdm(total=len(items), disable=not show_progress, unit="prompt", leave=False) as bar:
        return generation_eval(target.objective(), target.model, items, settings, target.model.device,
                               resamples, progress=bar.update)


def _scorecard(target: Target, other: Target, result: dict, human: dict | None) -> dict | None:
    """Weights from the target run's recipe (eval.scorecard); summaries of both runs."""
    from tunesmith.config.load import load_recipe
    from tunesmith.eval.scorecard import eval_scorecard
    from tunesmith.rundir import RunDir

    def summary(t: Target) -> dict | None:
        return RunDir(t.run_dir).read_summary() if t is not None and t.run_dir is not None else None

    weights = {}
    if target.run_dir is not None and (target.run_dir / "config.yaml").is_file():
        weights = load_recipe(target.run_dir / "config.yaml").eval.scorecard
    return eval_scorecard(result, summary(target) or {}, summary(other), weights, human)


def _judge(spec: str, items, own: dict, theirs: dict, device, log) -> dict:
    from tunesmith.eval.judge import judge_pairs, model_preference, served_preference

    log(f"judging {len(items)} answer pairs with {spec} (both orders) ...")
    prefer = served_preference(spec) if spec.startswith(("http://", "https://")) else \
        model_preference(load_target(spec, device))
    pairs = [{"id": a["id"], "prompt": a["prompt"], "candidate": a["prediction"], "baseline": b["prediction"]}
             for a, b in zip(own["predictions"], theirs["predictions"])]
    return dict(judge_pairs(prefer, pairs), judge=spec)


def _check_metrics(name: str, task: str, metrics: list[str] | None) -> None:
    if not metrics:
        return
    from tunesmith.eval.classify import CLASSIFICATION_METRICS
    from tunesmith.eval.reward_eval import REWARD_METRICS

    known = {"classification": CLASSIFICATION_METRICS, "reward": tuple(REWARD_METRICS)}.get(task, GENERATION_METRICS)
    wrong = [m for m in metrics if m not in known]
    if wrong and task == "classification" and set(wrong) <= set(GENERATION_METRICS):
        raise ConfigError(f"{name} is a classifier: it cannot generate, so it has no {', '.join(wrong)}.",
                          f"Ask for classification metrics: {', '.join(CLASSIFICATION_METRICS)}.")
    if wrong:
        raise ConfigError(f"Unknown metric(s) {', '.join(wrong)} for a {task} model.",
                          f"Choose from {', '.join(known)}.")


def _rows(target: Target, data: str | None, on_error: str) -> tuple[list[dict], list[dict], str]:
    from tunesmith.data.sources import load_records
    from tunesmith.rundir import RunDir

    shape = {"classification": "classification", "reward": "preference"}.get(target.task, "prompt")
    if data is None:
        run = RunDir(target.run_dir) if target.run_dir is not None else None
        if run is None or not run.eval_set.is_file():
            raise ConfigError(f"{target.name} has no held-out rows of its own.",
                              "Pass the rows to evaluate on with --data (a file or builtin:NAME).")
        return run.eval_rows(), [], str(run.eval_set)
    rejects: list[dict] = []
    rows = load_records(data, shape, on_error=on_error, rejects=rejects, keep_fields=())
    if shape == "preference":  # ranked lists and ratings become pairs, as in training (data.min_gap's default)
        from tunesmith.config.schema import DataConfig
        from tunesmith.data.preference_rows import expand_pairs

        rows = expand_pairs(rows, DataConfig.model_fields["min_gap"].default)[0]
    if shape == "classification":
        unknown = [(i, r["label"]) for i, r in enumerate(rows, 1) if r["label"] not in target.labels]
        if unknown:
            row, label = unknown[0]
            raise DataError(f"{data} row {row}: label {label!r} is not one of the model's labels "
                            f"({', '.join(target.labels)}); {len(unknown)} rows have unknown labels.",
                            "Evaluate on data with the labels the model was trained on.")
    return rows, rejects, data


def _against(target: Target, against: str | None, device) -> Target | None:
    if against in (None, "none"):
        return None
    if against == "auto":
        return base_of(target, device) if target.task == "causal_lm" and target.meta.get("method") else None
    if against == "base":
        return base_of(target, device)
    other = load_target(against, device)
    if other.task != target.task:
        raise ConfigError(f"{against} is a {other.task} model and {target.name} a {target.task} model.",
                          "Compare models of the same kind.")
    return other


def _select(metrics: dict, names: list[str] | None) -> dict:
    return {k: v for k, v in metrics.items() if not names or k in names}


def _write(out: Path, result: dict, own: dict, theirs: dict | None, rejects: list[dict]) -> None:
    from tunesmith.eval.eval_report import write_eval_report

    rows = own["predictions"]
    if theirs is not None:
        other = {p["id"]: p for p in theirs["predictions"]}
        fields = ("reward_chosen", "reward_rejected", "margin", "correct") if result["task"] == "reward" else \
            ("prediction", "scores")
        rows = [dict(p, **{f"against_{k}": other.get(p["id"], {}).get(k) for k in fields}) for p in rows]
    write_eval_output(out, result, rows, rejects)
    if "reliability" in own:
        from tunesmith.eval.class_metrics import reliability_plot

        reliability_plot(own["reliability"], out / "reliability.png")
    if result["task"] == "reward":
        from tunesmith.eval.plots import plot_reward_panels

        names = (str(result["against"])[:40], str(result["target"])[:40])
        panels = [(name, [p["reward_chosen"] for p in side["predictions"]],
                   [p["reward_rejected"] for p in side["predictions"]])
                  for name, side in zip(names, (theirs, own)) if side is not None]
        plot_reward_panels(panels, out / "rewards.png", names)
    write_eval_report(out, result, own, theirs)
