"""The method catalog: every fine-tuning method's recipe section and its facts, in one place.

Each method has a config class (its ``method:`` section) and a :class:`MethodInfo` row:
the recommended learning rate, which library does the adapting, whether it merges into
the base, whether the server can share a base between such adapters, how big its
checkpoints are, whether it prepends virtual tokens, and its ``compare`` presets. Every
consumer (schema, builders, saving and loading, export, serve, preflight, compare) reads
this table, so adding a method is one config class, one row here and one builder. The
module imports no torch: the CLI checks a recipe against it before any model loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from tunesmith.config.section import Section

TargetModules = Union[list[str], Literal["all-linear"], None]

# LoftQ (quantisation-aware LoRA init) was offered and could never run. PEFT's LoftQ
# replaces each base weight by its 4-bit approximation Q and starts the adapter at
# W - Q ~ B0 A0, so the adapter only fits that modified base: on the original base the
# reloaded model would differ by (W - Q) - B0 A0, which is not low-rank and cannot be
# folded back into a LoRA the way PiSSA's initial adapter can. Tunesmith's promise that
# final/ reloads on the recorded base to the same outputs rules it out.
LOFTQ_REMOVED = ("init 'loftq' is not supported: LoftQ changes the base weights, so the saved adapter would not "
                 "reproduce the trained model on the original base. Use init: pissa, or method qlora")


class FullMethod(Section):
    type: Literal["full"] = Field("full", description="Method full.")


class FreezeMethod(Section):
    type: Literal["freeze"] = Field("freeze", description="Method freeze.")
    train_last_n_layers: int = Field(
        0, ge=0, description="Transformer blocks (counted from the top) that train with the head; 0 = head only."
    )
    train_patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions on parameter names that also train, e.g. ['attention\\.output'].",
    )


TargetModules = Union[list[str], Literal["all-linear"], None]


class _LoraFields(Section):
    r: int = Field(8, ge=1, description="LoRA rank.")
    alpha: float = Field(16, gt=0, description="LoRA scaling numerator (scale = alpha / r, or alpha / sqrt(r) with rsLoRA).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    target_modules: TargetModules = Field(
        None, description="Module names to adapt, or 'all-linear'; default: attention (and MLP) projections per architecture."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained in full and saved with the adapter (classification heads are added automatically)."
    )
    use_rslora: bool = Field(False, description="Rank-stabilised LoRA: scale by alpha / sqrt(r), so large ranks keep learning.")
    use_dora: bool = Field(False, description="DoRA: learn each weight's magnitude separately from its LoRA-adapted direction.")
    init: Literal["default", "gaussian", "pissa"] = Field(
        "default",
        description="Adapter init: 'default' (Kaiming A, zero B), 'gaussian', or 'pissa' (principal singular "
        "vectors of the base weight, fast SVD).",
    )
    lora_plus_ratio: float | None = Field(
        None, gt=0, description="LoRA+: the B matrices learn this many times faster than A (e.g. 16)."
    )

    @field_validator("init", mode="before")
    @classmethod
    def _no_loftq(cls, value):
        if value == "loftq":
            raise ValueError(LOFTQ_REMOVED)
        return value


class LoraMethod(_LoraFields):
    type: Literal["lora"] = Field("lora", description="Method lora.")


class QloraMethod(_LoraFields):
    type: Literal["qlora"] = Field("qlora", description="Method qlora.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the frozen base weights.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.4 bit/parameter).")
    compute_dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "bfloat16", description="Dtype the 4-bit weights are dequantised to for each matmul."
    )


class AdaloraMethod(Section):
    type: Literal["adalora"] = Field("adalora", description="Method adalora.")
    init_r: int = Field(12, ge=1, description="Rank every adapted matrix starts with.")
    target_r: int = Field(4, ge=1, description="Average rank left after the budget schedule prunes.")
    tinit: float = Field(0.1, ge=0, lt=1, description="Share of steps trained at full rank before pruning starts.")
    tfinal: float = Field(0.2, ge=0, lt=1, description="Share of final steps trained with the final rank pattern.")
    delta_t: int = Field(5, ge=1, description="Steps between rank re-allocations.")
    beta1: float = Field(0.85, gt=0, lt=1, description="EMA factor of the sensitivity scores.")
    beta2: float = Field(0.85, gt=0, lt=1, description="EMA factor of the score uncertainty.")
    orth_reg_weight: float = Field(0.5, ge=0, description="Weight of the orthogonality penalty on P and Q.")
    alpha: float = Field(16, gt=0, description="Scaling numerator, as for lora.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: TargetModules = Field(None, description="As for lora.")

    @model_validator(mode="after")
    def _rank_order(self):
        if self.target_r > self.init_r:
            raise ValueError("adalora target_r must not exceed init_r")
        if self.tinit + self.tfinal >= 1:
            raise ValueError("adalora tinit + tfinal must leave steps for pruning (sum < 1)")
        return self


class PrefixMethod(Section):
    type: Literal["prefix"] = Field("prefix", description="Method prefix.")
    num_virtual_tokens: int = Field(20, ge=1, description="Prefix length: key/value vectors prepended in every layer.")
    projection: bool = Field(
        False, description="Reparameterise the prefix through a 2-layer MLP (the prefix-tuning paper's trick for stability)."
    )
    projection_hidden: int = Field(256, ge=1, description="Hidden width of that MLP.")


class PromptMethod(Section):
    type: Literal["prompt"] = Field("prompt", description="Method prompt.")
    num_virtual_tokens: int = Field(20, ge=1, description="Soft-prompt length (input embeddings prepended to each example).")
    init: Literal["random", "text"] = Field("random", description="'text' starts from the embeddings of init_text.")
    init_text: str | None = Field(None, description="Text whose token embeddings initialise the soft prompt.")

    @model_validator(mode="after")
    def _text_needs_text(self):
        if self.init == "text" and not self.init_text:
            raise ValueError("prompt init: text needs init_text")
        return self


class PtuningMethod(Section):
    type: Literal["ptuning"] = Field("ptuning", description="Method ptuning.")
    version: Literal[1, 2] = Field(
        2, description="1: P-tuning (input prompts produced by a prompt encoder); "
        "2: P-tuning v2 (deep prompts: trainable key/value prompts in every layer)."
    )
    num_virtual_tokens: int = Field(20, ge=1, description="Prompt length in virtual tokens.")
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="Prompt encoder of version 1.")
    encoder_hidden_size: int = Field(128, ge=1, description="Hidden width of the version-1 prompt encoder.")


class Ia3Method(Section):
    type: Literal["ia3"] = Field("ia3", description="Method ia3.")
    target_modules: TargetModules = Field(None, description="Modules whose activations get learned scales; default per architecture.")
    feedforward_modules: list[str] | None = Field(
        None, description="Which of target_modules are feed-forward (scaled on their input); default per architecture."
    )


class AdapterMethod(Section):
    type: Literal["adapter"] = Field("adapter", description="Method adapter.")
    style: Literal["houlsby", "pfeiffer", "parallel"] = Field(
        "houlsby",
        description="houlsby: after attention and feed-forward; pfeiffer: after feed-forward only; "
        "parallel: beside the feed-forward block, reading its input.",
    )
    reduction_factor: int = Field(16, ge=1, description="Bottleneck width = hidden size / reduction_factor.")
    non_linearity: Literal["relu", "gelu", "silu", "tanh"] = Field(
        "relu", description="Activation inside the bottleneck.")
    scaling: float = Field(1.0, gt=0, description="Multiplier on the adapter output (parallel adapters often use 4).")


class BitfitMethod(Section):
    type: Literal["bitfit"] = Field("bitfit", description="Method bitfit.")
    train_head: bool | None = Field(
        None, description="Also train the task head; default: yes for classification, no for causal_lm (the LM head is huge)."
    )


Method = Annotated[
    Union[FullMethod, FreezeMethod, LoraMethod, QloraMethod, AdaloraMethod, PrefixMethod, PromptMethod,
          PtuningMethod, Ia3Method, AdapterMethod, BitfitMethod],
    Field(discriminator="type"),
]


@dataclass(frozen=True)
class MethodInfo:
    """What the rest of Tunesmith needs to know about a method, without importing it."""

    config: type[Section]
    default_lr: float
    # Who adapts the model: "peft" (saved in PEFT's format), "own" (Tunesmith's own modules,
    # e.g. bottleneck adapters) or "weights" (plain weights train: saved as a full model).
    family: Literal["peft", "own", "weights"]
    mergeable: bool  # trained weights fold into the base (one model, no overhead)
    shareable: bool  # the server can hold many such adapters on one base (PEFT set_adapter)
    # Size of one checkpoint relative to the base's weight files: adapters save a few
    # percent; full/freeze save the weights (+ optimizer moments for what trains).
    checkpoint_share: float
    prompt_based: bool = False  # virtual tokens in front of every row: one example per row
    presets: dict[str, dict] = field(default_factory=dict)  # compare presets: label -> method section

    @property
    def name(self) -> str:
        return self.config.model_fields["type"].default


# Recommended peak learning rates: the fewer (and the more indirect) the trained parameters,
# the larger the steps they need. Full fine-tuning moves every weight, so it needs the smallest.
# Each sits at the top of the range the guides give (full 1e-5-5e-5, LoRA 1e-4-1e-3, prompt
# methods 1e-3-5e-3): typical fine-tunes are short, and a too-small rate wastes the budget.
_ROWS = [
    MethodInfo(FullMethod, 5e-5, "weights", True, False, 3.0, presets={"full": {}}),
    MethodInfo(FreezeMethod, 1e-3, "weights", True, False, 1.5,
               presets={"freeze": {}, "freeze-top2": {"train_last_n_layers": 2}}),
    MethodInfo(LoraMethod, 1e-3, "peft", True, True, 0.1, presets={
        "lora": {}, "rslora": {"use_rslora": True}, "dora": {"use_dora": True},
        "pissa": {"init": "pissa", "dropout": 0.0}, "loraplus": {"lora_plus_ratio": 16}}),
    MethodInfo(QloraMethod, 1e-3, "peft", True, True, 0.1, presets={"qlora": {}}),
    MethodInfo(AdaloraMethod, 2e-3, "peft", True, True, 0.1, presets={"adalora": {}}),
    MethodInfo(PrefixMethod, 5e-3, "peft", False, False, 0.1, prompt_based=True,
               presets={"prefix": {"projection": True}}),
    MethodInfo(PromptMethod, 5e-3, "peft", False, False, 0.1, prompt_based=True, presets={"prompt": {}}),
    MethodInfo(PtuningMethod, 5e-3, "peft", False, False, 0.1, prompt_based=True,
               presets={"ptuning": {"version": 1}, "ptuning2": {"version": 2}}),
    MethodInfo(Ia3Method, 5e-3, "peft", True, True, 0.05, presets={"ia3": {}}),
    MethodInfo(AdapterMethod, 1e-3, "own", False, False, 0.1, presets={
        "adapter": {"style": "houlsby"}, "adapter-pfeiffer": {"style": "pfeiffer"},
        "adapter-parallel": {"style": "parallel", "scaling": 4.0}}),
    # BitFit's trained biases are part of the weights: saved (and "merged") as a full model.
    MethodInfo(BitfitMethod, 2e-3, "weights", True, False, 1.1, presets={"bitfit": {}}),
]
METHODS: dict[str, MethodInfo] = {row.name: row for row in _ROWS}
METHOD_TYPES = tuple(METHODS)
DEFAULT_LR = {name: row.default_lr for name, row in METHODS.items()}
PRESETS: dict[str, dict] = {label: {"type": name, **body} for name, row in METHODS.items()
                            for label, body in row.presets.items()}


def method_info(name: str) -> MethodInfo:
    """The catalog row of method ``name`` (KeyError for an unknown one: the schema rejects those first)."""
    return METHODS[name]


def default_lr(method) -> float:
    """The recommended learning rate for a method section.

    Prefix tuning through its MLP needs a 10x smaller rate than direct deep prompts: on the
    demo task 5e-3 collapsed it to constant outputs (accuracy 0.504) where 5e-4 reached 0.722.
    """
    if method.type == "prefix" and method.projection:
        return 5e-4
    return DEFAULT_LR[method.type]
