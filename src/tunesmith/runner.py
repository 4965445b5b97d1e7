"""One run, start to finish: config -> data -> model + method -> train -> evaluate -> run directory."""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import torch
from transformers import set_seed

from tunesmith.config.load import dump_recipe
from tunesmith.config.schema import RecipeConfig
from tunesmith.config.train_section import with_train
from tunesmith.data.template import resolve_template
from tunesmith.eval.chat_eval import chat_checks, chat_summary, flat_scores, prediction_rows
from tunesmith.eval.evaluate import classification_summary, evaluate, scalar_metrics
from tunesmith.environment import library_versions, machine
from tunesmith.errors import RunStopped
from tunesmith.eval.report import write_report
from tunesmith.features import prepare_features
from tunesmith.eval.scorecard import run_scorecard
from tunesmith.methods import apply_method, count_parameters, training_hooks
from tunesmith.methods.saved import continue_adapter
from tunesmith.final_model import save_final
from tunesmith.models.load import load_model, load_tokenizer, resolve_model_source
from tunesmith.models.quantize import four_bit_config, quantization_settings
from tunesmith.models.vocab import embedding_rows, expand_tokenizer, resize_embeddings, summary_of
from tunesmith.objectives.reference_model import prepare_reference
from tunesmith.objectives.tasks import spec_for
from tunesmith.modelcard import write_model_card
from tunesmith.rundir import RunDir, has_model_meta, lock_run_dir, read_model_meta, resolve_run_dir
from tunesmith.train.backend import Backend
from tunesmith.train.checkpoint import remove_stale_temp_dirs
from tunesmith.train.hooks import with_extra_loss
from tunesmith.train.loop import train
from tunesmith.train.regularize import regularizer_for
from tunesmith.train.precision import autocast, resolve_precision
from tunesmith.train.tracking import Trackers, open_trackers
from tunesmith.train.preflight import (
    check_disk_space,
    run_fingerprint,
    find_resume_checkpoint,
    prepare_run_dir,
    schedule_change,
)
from tunesmith.train.sampler import planned_steps
from tunesmith.train.auto_batch import find_micro_batch
from tunesmith.train.memory import fix_mmap_threshold
from tunesmith.plan.check import budget_bytes, check_memory
from tunesmith.plan.device import default_budget
from tunesmith.train.state import TrainingInterrupted


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB."""
    # Linux: VmHWM, the high-water mark of this program's own memory. ru_maxrss also counts
    # the parent's memory this process was forked (or vfork-spawned) from before its exec,
    # so a run started by a large process (a test session, the UI) reported the parent's peak.
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def current_rss_mb() -> float:
    """This process's resident memory now, in MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def run_recipe(
    config: RecipeConfig,
    *,
    output_dir: str | Path | None = None,
    overwrite: bool = False,
    resume: str | None = None,
    base_dir: Path | None = None,
    show_progress: bool = True,
    log=print,
    on_evaluation=None,
    force: bool = False,
    allow_data_change: bool = False,
) -> dict:
    """Run ``config`` end to end and return the summary (also written to summary.json).

    ``base_dir`` resolves relative data paths (the recipe file's folder). ``resume`` is
    "auto" (latest valid checkpoint of the run directory, or a fresh start when there is
    none) or a checkpoint directory. ``on_evaluation(metrics)`` is called after each periodic
    evaluation; raising :class:`RunStopped` there stops the run (status "stopped").
    ``force`` trains even when the memory plan exceeds the budget by more than 10%.
    ``allow_data_change`` resumes although the training data's content changed since the
    checkpoint (the base model is scored again on the new data).

    Raises:
        ConfigError: run-directory, disk-space or resume problems (before any model loads).
        TrainingInterrupted: SIGINT/SIGTERM; a checkpoint was saved and summary.status is "interrupted".
    """
    run_dir = resolve_run_dir(config, output_dir)
    with lock_run_dir(run_dir, enabled=os.environ.get("RANK", "0") == "0"):  # the main process holds it
        return _run_locked(config, run_dir, overwrite, resume, base_dir, show_progress, log, on_evaluation, force,
                           allow_data_change)


def _run_locked(config, run_dir, overwrite, resume, base_dir, show_progress, log, on_evaluation, force,
                allow_data_change) -> dict:
    prepare_run_dir(run_dir, overwrite, resume)
    backend = Backend()
    run = RunDir(run_dir, backend.is_main)
    fingerprint = run_fingerprint(config, base_dir)
    resume_from = None
    extension = schedule_change(run_dir, config) if resume else None
    if resume == "auto" and not extension and run.read_summary().get("status") == "completed" \
            and has_model_meta(run.final):
        # Nothing to do: re-evaluating would only rewrite the same numbers.
        log(f"{run_dir} already completed; nothing to resume (raise train.max_steps or train.epochs to extend it)")
        return run.read_summary()
    if resume:
        if backend.is_main:
            remove_stale_temp_dirs(run_dir)
        resume_from, data_changed = find_resume_checkpoint(run_dir, resume, fingerprint, allow_data_change, log)
        if data_changed:
            log("the training data changed since the checkpoint (--allow-data-change): the base model is scored again")
            run.forget_eval_before()
        if resume_from is None:
            log("no valid checkpoint to resume from: starting from the beginning")
            run.forget_progress()
        else:
            log(f"resuming from {resume_from}")
        if extension:
            # The warmup/decay schedule is recomputed for the new length; the learning rate
            # continues from the new curve at the resumed step.
            log(f"extending the run: {extension['from']} -> {extension['to']}; the {config.train.scheduler} "
                "schedule is recomputed for the new length")
    if backend.is_main:
        dump_recipe(config, run_dir / "config.yaml")
    precision, why = resolve_precision(config.train.precision, backend.device.type)
    summary: dict = {"status": "running", "name": config.name, "task": config.task, "method": config.method.type,
                     "precision": {"setting": config.train.precision, "used": precision, "why": why},
                     "environment": {"versions": library_versions(), "machine": machine(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}}
    config = with_train(config, precision=precision)  # everything from the data cache on sees the one it uses
    if extension:
        summary["extended"] = extension  # recorded: this run is longer than it was first planned
    trackers = open_trackers(config, run_dir, resumed=resume_from is not None) if backend.is_main else Trackers([])
    try:
        summary = _run(config, run, backend, summary, base_dir, show_progress, log, resume_from, fingerprint, trackers,
                       on_evaluation, force)
        summary["status"] = "completed"
    except RunStopped as exc:
        summary["status"] = "stopped"
        summary["stopped"] = str(exc)
        raise
    except KeyboardInterrupt as exc:  # TrainingInterrupted (a checkpoint was saved) is one too
        summary["status"] = "interrupted"
        if isinstance(exc, TrainingInterrupted):
            summary["interrupted_at_step"] = exc.step
            summary["checkpoint"] = str(exc.checkpoint)
        raise
    except Exception as exc:
        summary["status"] = "failed"
        summary["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        summary["run_dir"] = str(run_dir)
        summary["environment"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %z")
        run.write_summary(summary)
        if summary["status"] != "completed":
            trackers.finish(summary, run_dir)
    if backend.is_main:
        write_report(run_dir, summary)
        final = run.final
        write_model_card(final, read_model_meta(final), summary, config.model_dump(mode="json"))
        trackers.finish(summary, run_dir, final if config.train.report_model else None)
    return summary


def _run(config: RecipeConfig, run: RunDir, backend: Backend, summary: dict, base_dir, show_progress: bool, log,
         resume_from: Path | None, fingerprint: str, trackers: Trackers, on_evaluation=None,
         force: bool = False) -> dict:
    started = time.perf_counter()
    if config.train.num_threads:
        torch.set_num_threads(config.train.num_threads)
    set_seed(config.seed)
    spec = spec_for(config)
    summary["headline"] = spec.headline

    tokenizer = load_tokenizer(config.model.name)
    if config.data.chat_template:
        # Set on the tokenizer, so final/ saves it and serving renders chats the same way.
        tokenizer.chat_template = resolve_template(config.data.chat_template, base_dir)
    new_tokens = expand_tokenizer(config, tokenizer, spec.shape, base_dir, log)  # before the data is tokenized
    data, objective, train_features, eval_features = prepare_features(config, base_dir, tokenizer, summary, log,
                                                                      show_progress, backend.device)
    if data.rejects and config.data.on_error == "quarantine":
        run.write_rows("rejects", data.rejects)

    source = resolve_model_source(config.model.name)
    baseline_mb = current_rss_mb()  # what the process holds before the model: `tunesmith plan`'s baseline
    check_disk_space(run.path, source, config.method.type, config.train)
    auto_batch = config.train.batch_size == "auto"
    if auto_batch:  # planned (and counted in steps) as one global batch until the search picks the micro-batch
        config = with_train(config, batch_size=config.train.global_batch, grad_accum=1)
    preflight = backend.is_main and not force and resume_from is None
    if preflight or config.train.gradient_checkpointing == "auto":
        plan = check_memory(with_train(config, batch_size=1, grad_accum=config.train.global_batch) if auto_batch
                            else config, train_features, source, log, refuse=preflight,
                            vocab_rows=embedding_rows(len(tokenizer)) if new_tokens else None)
        summary["plan"] = {"total_bytes": plan.total_bytes, "baseline_bytes": plan.components["baseline"],
                           "budget_bytes": plan.device["memory_bytes"], "vocab_rows": plan.params["vocab_rows"]}
        config = with_train(config, gradient_checkpointing=plan.settings["gradient_checkpointing"],
                            gradient_checkpointing_every_n_layers=plan.settings["gradient_checkpointing_every_n_layers"])
    quantization = quantization_settings(config.method)
    # A classifier's head has one output per label; a reward model's one output is the reward.
    head_labels = data.labels or getattr(objective, "labels", None)
    student = None  # a distillation student built from its teacher (distill.keep_every)
    if config.task == "distill":  # the cache is computed in the precision the live teacher would run in
        with autocast(backend.device, config.train.precision):
            summary["distill"], student = objective.prepare(train_features, backend.device, log)
    model = student
    if model is None:
        model, _ = load_model(
            config.model.name, spec.head, num_labels=len(head_labels) if head_labels else None,
            id2label=dict(enumerate(head_labels)) if head_labels else None,
            dtype=torch.bfloat16 if config.model.dtype == "bfloat16" else torch.float32,
            trust_remote_code=config.model.trust_remote_code,
            quantization=four_bit_config(**quantization) if quantization else None,
        )
    if new_tokens:
        resize_embeddings(model, new_tokens, len(tokenizer))
        summary["vocab"] = summary_of(new_tokens)
    model.to(backend.device)
    if data.labels and student is None:
        log(f"new classification head: {len(data.labels)} labels")

    def scores(m) -> dict:
        with autocast(backend.device, config.train.precision):
            return evaluate(objective, m, eval_features, config.train.eval_batch_size, backend.device, spec.metrics)

    def full_eval(m) -> tuple[dict, list]:
        metrics = scores(m)
        with autocast(backend.device, config.train.precision):
            probes = _answer_probes(objective, m, config, backend.device)
            if spec.shape == "chat":  # answers scored against references, and the general questions
                metrics["_chat"] = chat_checks(objective, m, config, data.eval, data.train, backend.device)
                metrics.update(flat_scores(metrics["_chat"]))
        return metrics, probes

    total_steps = planned_steps(len(train_features), config.train)
    method_args = {"total_steps": total_steps, "new_token_ids": new_tokens.ids if new_tokens else None,
                   "new_token_lr_scale": config.model.new_tokens_lr_scale}
    if config.model.adapter_from:
        # Start from that run's adapter: the "before" scores are then that adapter's.
        model = apply_method(model, config.method, config.model_task, **method_args)
        continue_adapter(model, config.model.adapter_from, config.method.type, source)
        log(f"starting from the adapter of {config.model.adapter_from}")
    # The starting policy is a preference run's reference: settled before the method wraps it.
    with autocast(backend.device, config.train.precision):  # as the policy's log-probs will be computed
        reference = prepare_reference(objective, model, config, train_features, eval_features,
                                      (summary["data"].get("cache") or {}).get("key"), backend.device, log)
    if reference:
        log(f"reference model: {reference}")
        summary["reference"] = reference
    # The base model's scores are kept in the run directory so a resumed run reuses them.
    saved = run.eval_before()
    if saved:
        before, probes_before = saved
    else:
        log("evaluating the base model ...")
        before, probes_before = full_eval(model)
        run.save_eval_before(before, probes_before)

    if config.train.eval_every and config.train.eval_every >= total_steps:
        # A quick try (--set train.max_steps=10) should not fail over an interval meant for
        # the full run: the loop always evaluates at the end.
        log(f"warning: train.eval_every={config.train.eval_every} is not below the run's {total_steps} steps: "
            "evaluating at the end only")
    if not config.model.adapter_from:
        model = apply_method(model, config.method, config.model_task, **method_args)
    if config.train.gradient_checkpointing:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).activation_checkpointing_enable(
            every_n_layers=config.train.gradient_checkpointing_every_n_layers)
    if auto_batch:
        if config.train.mmap_threshold_kb:  # measured under the allocator settings training will run with
            fix_mmap_threshold(config.train.mmap_threshold_kb * 1024)
        search = find_micro_batch(model, objective, train_features, config.train.global_batch,
                                  budget_bytes(config) or default_budget(backend.device.type), backend.device,
                                  config.train.precision, log)
        config = with_train(config, batch_size=search.micro_batch, grad_accum=search.grad_accum)
        summary["auto_batch"] = {"batch_size": search.micro_batch, "grad_accum": search.grad_accum,
                                 "tries_mb": {k: round(v / 2**20, 1) for k, v in search.tries.items()},
                                 "budget_mb": round(search.budget_bytes / 2**20, 1)}
    trainable, total = count_parameters(model)
    log(f"method {config.method.type}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / total:.2f}%)")
    summary.update(trainable_params=trainable, total_params=total)

    def periodic_evaluation(m) -> dict:
        metrics = scalar_metrics(scores(m))
        if on_evaluation:
            on_evaluation(metrics)
        return metrics

    hooks = training_hooks(config.method)
    regularizer = regularizer_for(config, model, objective, spec.shape, base_dir, backend.device, log)
    if regularizer:  # computed from the starting model, so a resumed run rebuilds the same one
        hooks = with_extra_loss(hooks, regularizer.penalty)
    stats = train(
        model, objective, train_features, config.train, lr=config.learning_rate, seed=config.seed,
        run_dir=run.path, backend=backend, evaluate=periodic_evaluation,
        best_metric=config.train.best_metric or spec.headline, show_progress=show_progress,
        resume_from=resume_from, config_hash=fingerprint, hooks=hooks, trackers=trackers,
    )
    if regularizer:
        summary["regularize"] = dict(regularizer.info, penalty_end=round(float(regularizer.penalty().detach()), 6))
    model = backend.unwrap(model)
    after, probes_after = full_eval(model)
    if spec.shape == "chat":
        summary.update(chat_summary(before.get("_chat", {}), after["_chat"], config))
        generations = prediction_rows(before.get("_chat", {}), after["_chat"])
        summary["samples"] = [{"prompt": g["prompt"], "reference": g["reference"], "generated": g["prediction"]}
                              for g in generations[:5]]
        if summary.get("forgetting", {}).get("warning"):
            log(f"warning: {summary['forgetting']['warning']}")

    if backend.is_main:
        save_final(model, tokenizer, run.final, config, source, head_labels, new_tokens)
    summary.update(
        eval_before=scalar_metrics(before),
        eval_after=scalar_metrics(after),
        train={
            "wall_s": round(stats.wall_s, 3),
            "samples_per_s": stats.samples / stats.wall_s,
            "tokens_per_s": stats.tokens / stats.wall_s,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "baseline_rss_mb": round(baseline_mb, 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch.cuda.is_available() else None,
            "steps": stats.steps,
            "samples": stats.samples,
            "tokens": stats.tokens,
            "lr": config.learning_rate,
            "early_stopped": stats.early_stopped,
            "rollbacks": stats.rollbacks,
            "skipped_batches": stats.skipped_batches,
            "best": stats.best,
            "optimizer": config.train.optimizer,
            "gradient_checkpointing": config.train.gradient_checkpointing,
            "gradient_checkpointing_every_n_layers": config.train.gradient_checkpointing_every_n_layers,
            "optimizer_state_mb": round(stats.optimizer_state_bytes / 2**20, 2),
        },
        total_wall_s=round(time.perf_counter() - started, 3),
        labels=data.labels,
        confusion_matrix={"before": before.get("confusion_matrix"), "after": after.get("confusion_matrix")},
        probes=_merge_probes(config.eval.probes, probes_before, probes_after),
    )
    summary["scorecard"] = run_scorecard(summary, config.eval.scorecard, config.train.best_metric or spec.headline)
    run.write_rows("eval_set", data.eval)
    if data.test:
        run.write_rows("test_set", data.test)
    if "_probs" in after:
        run.write_predictions(data.eval, data.labels, after["_probs"])
        summary["classification"] = classification_summary(data.eval, data.labels, before, after, config.seed)
    if "_rewards" in after:
        run.write_rows("rewards", reward_rows(before.get("_rewards"), after["_rewards"]))
    if spec.shape == "chat":
        run.write_generations(generations)
    run.write_probes(summary["probes"])
    return summary


def reward_rows(before: dict | None, after: dict) -> list[dict]:
    """One row per held-out pair: its chosen and rejected rewards before and after training."""
    rows = [{"chosen_after": c, "rejected_after": r} for c, r in zip(after["chosen"], after["rejected"])]
    if before:
        for row, c, r in zip(rows, before["chosen"], before["rejected"]):
            row.update(chosen_before=c, rejected_before=r)
    return rows


def _answer_probes(objective, model, config: RecipeConfig, device) -> list:
    if not config.eval.probes:
        return []
    if config.model_task == "causal_lm":
        return objective.answer(model, config.eval.probes, config.eval.max_new_tokens, device)
    if objective.task == "reward":  # each probe is an answer scored without a prompt
        return [{"reward": round(r, 4)} for r in objective.score(model, "", config.eval.probes, device)]
    features = objective.encode([{"text": p, "label": objective.labels[0]} for p in config.eval.probes])
    probs = objective.predict(model, features, config.train.eval_batch_size, device)
    return [
        {"label": objective.labels[int(p.argmax())], "probability": round(float(p.max()), 4)} for p in probs
    ]


def _merge_probes(prompts: list[str], before: list, after: list) -> list[dict]:
    return [{"input": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)]
