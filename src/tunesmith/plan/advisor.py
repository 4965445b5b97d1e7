"""The guides' rules as code: which method, model, rank, learning rate, batch and memory
levers a recipe should use, each with one line of why.

The method decision tree (the practitioners' guides' order):
1. full fine-tuning fits with headroom and there is enough data to move every weight -> full;
2. LoRA fits -> LoRA, its rank by the task's complexity;
3. QLoRA fits (4-bit base) -> QLoRA;
4. nothing with adapters on every layer fits -> the lightest methods: BitFit (models with
   biases) or prompt tuning for simple tasks, P-tuning v2 or bottleneck adapters for
   complex ones.
Every branch is decided by a real plan of that method (:func:`make_plan`), not a table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

# Task complexity: a label per text is simple; chat SFT is medium; continued pretraining
# and preference/RL tuning change the most behaviour.
COMPLEXITY = {"classification": "simple", "causal_lm": "medium", "reward": "simple", "pretrain": "complex",
              "preference": "complex", "grpo": "complex", "distill": "medium"}
RANK = {"simple": 8, "medium": 16, "complex": 32}
# Learning-rate ranges of the guides (full 1e-5..5e-5, LoRA 1e-4..1e-3, prompts 1e-3..5e-3, ...).
LR_RANGE = {"full": (1e-5, 5e-5), "freeze": (1e-4, 1e-3), "lora": (1e-4, 1e-3), "qlora": (1e-4, 1e-3),
            "adalora": (1e-4, 2e-3), "prefix": (1e-4, 5e-3), "prompt": (1e-3, 5e-3), "ptuning": (1e-3, 5e-3),
            "ia3": (1e-3, 1e-2), "adapter": (1e-4, 1e-3), "bitfit": (1e-4, 2e-3)}
TARGET_BATCH = 32  # examples per optimizer step the guides aim for (16-64)
HEADROOM = 0.8     # plan to use at most 80% of the budget
FULL_DATA = 10_000  # fewer examples than this overfit full fine-tuning before adapters do
CHAT_MODEL_DATA = 5_000  # below this, start from an instruct/chat model; far above it a base model is fine


@dataclass
class Change:
    key: str
    old: object
    new: object
    why: str


@dataclass
class Advice:
    """The path through the rules and the recipe changes they recommend."""

    path: list[str] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)

    def overrides(self) -> list[str]:
        """The changes as ``--set`` strings."""
        return [f"{c.key}={c.new}" for c in self.changes]


def _variant(config, **method):
    from tunesmith.config.schema import RecipeConfig

    data = config.model_dump(mode="json")
    data["method"] = method
    return RecipeConfig.model_validate(data)


def _with(config, key: str, value):
    from tunesmith.config.schema import RecipeConfig

    data = config.model_dump(mode="json")
    section, name = key.split(".")
    data[section][name] = value
    return RecipeConfig.model_validate(data)


def _fits(plan, budget: int) -> bool:
    return plan.total_bytes <= budget * HEADROOM


def choose_method(config, plan_of, budget: int, examples: int | None, has_biases: bool, path: list[str]):
    """The method section the decision tree picks (as a dict), recording each question in ``path``."""
    complexity = COMPLEXITY[config.task]
    rank = RANK[complexity]
    lora = {"type": "lora", "r": rank, "alpha": 2 * rank}

    def fits(label: str, method: dict) -> bool:
        plan = plan_of(method)
        ok = _fits(plan, budget)
        path.append(f"{label} needs {plan.total_bytes / 2**30:.2f} GiB of {budget / 2**30:.2f} GiB "
                    f"({'fits' if ok else 'does not fit'} with {100 - 100 * HEADROOM:.0f}% headroom)")
        return ok

    if fits("full fine-tuning", {"type": "full"}):
        if examples is not None and examples >= FULL_DATA:
            path.append(f"{examples:,} training examples (>= {FULL_DATA:,}): enough to move every weight -> full")
            return {"type": "full"}
        path.append(f"{'unknown number of' if examples is None else f'{examples:,}'} training examples "
                    f"(< {FULL_DATA:,} or unknown): full fine-tuning would overfit and forget more -> LoRA")
    elif not fits(f"LoRA r={rank}", lora):
        if fits("QLoRA (4-bit base)", {**lora, "type": "qlora"}):
            return {**lora, "type": "qlora"}
        if complexity == "simple":
            choice = {"type": "bitfit"} if has_biases else {"type": "prompt"}
            path.append(f"nothing on every layer fits; a simple task -> {choice['type']} "
                        f"({'the model has bias terms' if has_biases else 'the model has no bias terms'})")
        else:
            choice = {"type": "ptuning", "version": 2} if config.model_task == "classification" else {"type": "adapter"}
            path.append(f"nothing on every layer fits; a {complexity} task -> {choice['type']}")
        return choice
    path.append(f"task {config.task} is {complexity} -> LoRA rank {rank}")
    return lora


def advise(config, plan, *, device_spec=None, gpus: int = 1, examples: int | None = None,
           has_biases: bool | None = None, budget_bytes: int | None = None) -> Advice:
    """The guides' recommendations for ``config`` given its ``plan`` on the device."""
    from tunesmith.plan.planner import make_plan

    advice = Advice()
    budget = budget_bytes or plan.device["memory_bytes"]
    cache: dict[str, object] = {}

    def plan_of(method: dict, base=config):
        key = repr((method, base.train.model_dump()))
        if key not in cache:
            cache[key] = make_plan(_variant(base, **method), device_spec=device_spec, gpus=gpus,
                                   budget_bytes=budget_bytes, with_time=False)
        return cache[key]

    if has_biases is None:
        has_biases = plan.params["biases"] > 0
    method = choose_method(config, plan_of, budget, examples, has_biases, advice.path)
    current = config.method.model_dump(mode="json")
    why = advice.path[-1]
    if method["type"] != current["type"]:  # a new section: another method's fields would not apply
        advice.changes.append(Change("method", current["type"], _flow(method), why))
    else:
        advice.changes += [Change(f"method.{k}", current.get(k), v, why) for k, v in method.items()
                           if k != "type" and current.get(k) != v]
    chosen = _variant(config, **{**(current if method["type"] == current["type"] else {}), **method})
    _batch_and_lr(_memory_levers(chosen, plan_of, budget, advice), advice)
    _model_choice(config, examples, advice)
    return advice


def _memory_levers(config, plan_of, budget: int, advice: Advice):
    """Gradient checkpointing, then bf16, then a smaller micro-batch (more accumulation, the
    same global batch), while the plan does not fit. Returns the changed recipe."""
    method = config.method.model_dump(mode="json")
    plan = plan_of(method, config)
    if _fits(plan, budget):
        advice.path.append(f"{plan.total_bytes / 2**30:.2f} GiB fits: no memory levers needed")
        return config
    levers = []
    if config.train.gradient_checkpointing is not True:  # auto was planned off, since it fits nowhere near
        levers.append(("train.gradient_checkpointing", True,
                       "activations are kept per block only (about a third more compute)"))
    if plan.settings.get("precision", config.train.precision) == "fp32":
        levers.append(("train.precision", "bf16", "autocast halves the saved activations"))
    for key, value, why in levers:
        config = _with(config, key, value)
        plan = plan_of(method, config)
        advice.changes.append(Change(key, None, value, f"{why}; the plan needs {plan.total_bytes / 2**30:.2f} GiB"))
        if _fits(plan, budget):
            return config
    start = config.train
    while config.train.batch_size > 1 and not _fits(plan, budget):
        smaller = config.train.batch_size // 2
        config = _with(_with(config, "train.batch_size", smaller), "train.grad_accum", config.train.grad_accum * 2)
        plan = plan_of(method, config)
    if config.train.batch_size != start.batch_size:
        why = f"a smaller micro-batch, the same global batch; the plan needs {plan.total_bytes / 2**30:.2f} GiB"
        advice.changes += [Change("train.batch_size", start.batch_size, config.train.batch_size, why),
                           Change("train.grad_accum", start.grad_accum, config.train.grad_accum, why)]
    if not _fits(plan, budget):
        advice.notes.append("even one row per micro-batch does not fit: shorten data.max_length or use a larger device")
    return config


def _batch_and_lr(config, advice: Advice) -> None:
    """Gradient accumulation towards the target batch; the learning rate inside its method's range."""
    micro, accum = config.train.batch_size, config.train.grad_accum
    if micro * accum < TARGET_BATCH // 2:
        target = math.ceil(TARGET_BATCH / micro)
        advice.changes = [c for c in advice.changes if c.key != "train.grad_accum"]
        advice.changes.append(Change("train.grad_accum", accum, target,
                                     f"{micro} x {target} = {micro * target} examples per step (the guides aim for 16-64)"))
    low, high = LR_RANGE[config.method.type]
    lr = config.learning_rate
    if not low <= lr <= high:
        from tunesmith.config.methods import default_lr

        advice.changes.append(Change("train.lr", lr, default_lr(config.method),
                                     f"{config.method.type} learns well between {low:g} and {high:g}"))
    else:
        advice.path.append(f"learning rate {lr:g} is inside {config.method.type}'s range {low:g}-{high:g}")


def _model_choice(config, examples: int | None, advice: Advice) -> None:
    """Chat vs base model by data size (advice only: the model is the user's choice)."""
    if config.task != "causal_lm" or examples is None:
        return
    name = config.model.name.lower()
    chat = any(tag in name for tag in ("instruct", "chat", "smollm2"))
    if examples < CHAT_MODEL_DATA and not chat:
        advice.notes.append(f"{examples:,} chats is little data: start from an instruct/chat model, which already "
                            "follows instructions (your data then only steers it)")
    elif examples >= 10 * CHAT_MODEL_DATA and chat:
        advice.notes.append(f"{examples:,} chats is enough to start from a base model, which keeps more of its "
                            "general knowledge than one tuned for chat")


def _flow(section: dict) -> str:
    """A method section as one-line YAML for --set (method={type: lora, r: 16})."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in section.items()) + "}"


def render_advice(advice: Advice, explain: bool = False) -> str:
    """The recommended recipe diff as --set options (and with ``explain`` the decision path)."""
    lines = []
    if explain:
        lines.append("the advisor's path:")
        lines += [f"  {i}. {step}" for i, step in enumerate(advice.path, 1)]
    if advice.changes:
        lines.append("recommended changes:")
        for c in advice.changes:
            lines.append(f"  --set '{c.key}={c.new}'    # was {c.old}: {c.why}")
    else:
        lines.append("recommended changes: none, the recipe follows the guides")
    lines += [f"note: {n}" for n in advice.notes]
    return "\n".join(lines)
