"""The task registry: what each training stage (``task:`` in a recipe) is made of.

A task declares the shape of its data rows (which validator reads them), the model head
it trains, how its objective is built, the metrics its evaluation reports and the
headline metric (its direction comes from the metric registry). Adding a stage is one
objective module plus one :class:`TaskSpec` line here; the schema, the data pipeline,
the runner and the model loader all read this table. Torch-free: objectives are
imported only when a run builds one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable


@dataclass(frozen=True)
class TaskSpec:
    """One training stage."""

    name: str
    shape: str  # data shape the row validators read: classification | chat | text | preference | prompt
    head: str  # model class: "classification" (sequence classifier) or "causal_lm"
    make_objective: Callable  # (config, tokenizer, labels) -> objective
    metrics: tuple[str, ...]  # names in tunesmith.eval.metrics.METRICS, headline first
    description: str

    @property
    def headline(self) -> str:
        """The metric that ranks checkpoints and methods (its direction: eval.metrics.higher_is_better)."""
        return self.metrics[0]


# Tasks whose objectives pack a micro-batch without padding: examples back to back in one row,
# or answers behind their shared prompt (objectives/shared_prompt.py).
PADDING_FREE_TASKS = ("causal_lm", "pretrain", "preference", "grpo", "reward")


def padding_free(config) -> bool:
    """Whether ``config``'s micro-batches are packed into one row (train.padding_free)."""
    from tunesmith.config.methods import method_info

    if config.task not in PADDING_FREE_TASKS:
        return False

    # Virtual tokens (prompt methods) would be shared by every example of a concatenated row.
    return config.train.padding_free and not method_info(config.method.type).prompt_based


def _classification(config, tokenizer, labels):
    from tunesmith.objectives.classification import ClassificationObjective

    return ClassificationObjective(tokenizer, labels, config.data.max_length, config.data.on_overlength,
                                   label_smoothing=config.train.label_smoothing)


def _chat_sft(config, tokenizer, labels):
    from tunesmith.objectives.causal_lm import CausalLMObjective

    return CausalLMObjective(tokenizer, config.data.max_length, config.data.system_prompt,
                             config.data.on_overlength, config.data.loss_on == "last_answer",
                             head_on_targets=config.train.lm_head_on_targets, padding_free=padding_free(config),
                             label_smoothing=config.train.label_smoothing, history=config.data.history)


def _pretrain(config, tokenizer, labels):
    from tunesmith.objectives.pretrain import PretrainObjective

    return PretrainObjective(tokenizer, config.data.max_length, head_on_targets=config.train.lm_head_on_targets,
                             padding_free=padding_free(config))


def _reward(config, tokenizer, labels):
    from tunesmith.objectives.reward import RewardObjective

    return RewardObjective(tokenizer, config.data.max_length, config.data.system_prompt, config.data.on_overlength,
                           margin=config.reward.margin, padding_free=padding_free(config))


def _preference(config, tokenizer, labels):
    from tunesmith.objectives.preference import PreferenceObjective

    return PreferenceObjective(tokenizer, config.data.max_length, config.preference, config.data.system_prompt,
                               config.data.on_overlength, padding_free=padding_free(config))


def _grpo(config, tokenizer, labels):
    from tunesmith.objectives.grpo import GrpoObjective

    return GrpoObjective(tokenizer, config.data.max_length, config.grpo, config.data.system_prompt,
                         config.data.on_overlength, padding_free=padding_free(config))


def _distill(config, tokenizer, labels):
    from tunesmith.objectives.distill import DistillObjective

    student = TASKS[teacher_kind(config.distill.teacher)].make_objective(config, tokenizer, labels)
    return DistillObjective(student, config.distill)


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (
    TaskSpec("classification", "classification", "classification", _classification,
             ("accuracy", "macro_f1", "eval_loss"), "a label per text (or text pair)"),
    TaskSpec("causal_lm", "chat", "causal_lm", _chat_sft, ("eval_loss", "perplexity"),
             "chat SFT: loss on the assistant answers"),
    TaskSpec("pretrain", "text", "causal_lm", _pretrain, ("eval_loss", "perplexity"),
             "continued pretraining on raw text: loss on every token"),
    TaskSpec("reward", "preference", "classification", _reward, ("pairwise_accuracy", "mean_margin", "eval_loss"),
             "reward model: one score per answer, Bradley-Terry loss on chosen/rejected pairs"),
    TaskSpec("preference", "preference", "causal_lm", _preference, ("pairwise_accuracy", "mean_margin", "eval_loss"),
             "preference tuning of a chat model: DPO, IPO, ORPO, SimPO or KTO"),
    TaskSpec("grpo", "prompt", "causal_lm", _grpo, ("mean_reward",),
             "online RL (GRPO): sampled answers to prompts, scored by grpo.rewards"),
    # Shape, head and metrics are the teacher's: see spec_for.
    TaskSpec("distill", "teacher", "teacher", _distill, ("eval_loss",),
             "knowledge distillation: a student learns a trained teacher's output distribution (distill.teacher)"),
)}
DISTILLABLE = ("classification", "causal_lm")


def task_spec(name: str) -> TaskSpec:
    """The registry entry of task ``name`` (KeyError for an unknown one: the schema rejects those first)."""
    return TASKS[name]


def saved_spec(meta: dict) -> TaskSpec:
    """The spec of a saved model from its ``tunesmith.json`` (a distilled student is measured as its kind)."""
    stage = meta.get("stage") or meta["task"]
    return TASKS[meta["task"] if stage == "distill" else stage]


def spec_for(config) -> TaskSpec:
    """The spec a recipe runs: its task's, except that ``task: distill`` takes the shape, head
    and metrics of its teacher's kind (classification or causal_lm) under its own name.

    Raises:
        ValueError: the teacher is missing, not a run, or not a classifier or chat model.
    """
    if config.task != "distill":
        return TASKS[config.task]
    kind = teacher_kind(config.distill.teacher)
    return replace(TASKS[kind], name="distill", make_objective=_distill,
                   description=TASKS["distill"].description)


def teacher_kind(teacher: str | None) -> str:
    """``classification`` or ``causal_lm``: what the distillation teacher at ``teacher`` is (torch-free)."""
    return teacher_meta(teacher)["task"]


def teacher_meta(teacher: str | None) -> dict:
    """The teacher run's ``tunesmith.json``, checked to be a classifier or a chat model.

    Raises:
        ValueError: no teacher named, not a run, or a reward/preference-pair model.
    """
    from tunesmith.errors import TunesmithError
    from tunesmith.rundir import read_model_meta, resolve_final_dir

    if not teacher:
        raise ValueError("task: distill needs distill.teacher: the run to learn from (runs/<name>)")
    try:
        meta = read_model_meta(resolve_final_dir(teacher)[0])
    except TunesmithError as exc:
        raise ValueError(f"distill.teacher: {exc.args[0]}") from None
    stage = meta.get("stage") or meta["task"]
    if meta["task"] not in DISTILLABLE or stage == "reward":
        raise ValueError(f"distill.teacher: {teacher} is a {stage} run; a teacher is a classification or chat run")
    return meta


def tasks_with_shape(*shapes: str) -> list[str]:
    """Task names whose rows have one of ``shapes`` (for error messages that name the valid tasks)."""
    return [name for name, spec in TASKS.items() if spec.shape in shapes]
