"""The recipe's ``train:`` section: the loop, the optimizer, precision and checkpoints."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.guard import GuardConfig
from tunesmith.config.section import Section


class RegularizeConfig(Section):
    type: Literal["ewc", "l2sp"] = Field(..., description="ewc: pull each weight back in proportion to its "
                                         "importance for general data (diagonal Fisher, estimated before training); "
                                         "l2sp: pull every weight back alike.")
    weight: float = Field(..., gt=0, description="Strength: weight/2 x sum of F x (w - w_start)^2, added to each "
                          "step's mean token loss. The Fisher is scaled to mean 1, so one weight means about the "
                          "same total pull for ewc and l2sp.")
    data: str | None = Field(None, description="ewc: the general data the Fisher is estimated on (a dataset spec); "
                             "default builtin:chatterbot for chat runs (other tasks must name one).")
    fisher_samples: int = Field(64, ge=1, description="ewc: rows of that data (seeded choice) in the estimate.")


class TrainConfig(Section):
    epochs: float = Field(1, gt=0, description="Passes over the training data (ignored when max_steps is set).")
    max_steps: int | None = Field(None, ge=1, description="Optimizer steps; overrides epochs.")
    batch_size: int | Literal["auto"] = Field(
        16, description="Examples per forward pass; 'auto': the largest that fits in memory (a short search with "
        "real forward/backward passes), grad_accum then keeping global_batch examples per step.")
    global_batch: int = Field(16, ge=1, description="Examples per optimizer step with batch_size: auto.")
    memory_budget: float | None = Field(
        None, gt=0, description="GiB this run may use: the preflight refuses a plan above it by more than 10% "
        "(--force runs anyway), and batch_size: auto searches under it. Default: the GPU's memory, or the RAM free "
        "at the start.")
    grad_accum: int = Field(1, ge=1, description="Forward passes per optimizer step.")
    lr: float | None = Field(None, gt=0, description="Peak learning rate; default depends on the method.")
    optimizer: Literal["adamw", "adamw_8bit", "lion", "sgd", "adafactor"] = Field(
        "adamw", description="adamw (torch), adamw_8bit (bitsandbytes: 8-bit states, CPU or GPU), lion (sign "
        "updates, one state; use a 3-10x smaller lr), sgd (with momentum) or adafactor (factored second moments, "
        "transformers' implementation at a fixed lr).")
    betas: tuple[float, float] | None = Field(
        None, description="adamw, adamw_8bit, lion: (beta1, beta2); default (0.9, 0.999), Lion's (0.9, 0.99).")
    momentum: float = Field(0.9, ge=0, lt=1, description="sgd: momentum.")
    layer_lr_decay: float | None = Field(
        None, gt=0, le=1, description="Layer-wise learning-rate decay: the top block trains at lr, each block "
        "below at this factor times the one above, the embeddings below the lowest block; heads at lr.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="classification, causal_lm: the training "
                                   "cross-entropy's label smoothing (eval loss stays plain cross-entropy).")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay (not on biases and norms); decoupled for "
                                "adamw and lion.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of steps with linear warmup.")
    scheduler: Literal["cosine", "linear", "constant"] = Field(
        "cosine", description="Learning-rate decay after warmup (to 0 for cosine and linear).")
    max_grad_norm: float | None = Field(1.0, gt=0, description="Clip the gradient norm; null disables.")
    gradient_checkpointing: bool | Literal["auto"] = Field(
        False, description="Recompute each block's activations in the backward pass instead of keeping them "
        "(transformers' activation checkpointing): less memory, about a third more compute. auto: on only when "
        "the memory plan without it comes above 90% of the budget, recomputing every 4th, every 2nd or every block: "
        "the first that the plan fits in 90% with (it sets gradient_checkpointing_every_n_layers).")
    gradient_checkpointing_every_n_layers: int = Field(
        1, ge=1, description="With gradient_checkpointing: recompute only every Nth block (transformers' "
        "every_n_layers); the others keep their activations. 1: every block. 2 keeps half the blocks' activations "
        "for half the recompute: a middle way when full checkpointing frees more memory than the run needs.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="bf16/fp16 run forward passes under autocast; fp16 adds dynamic loss scaling. auto: "
        "bf16 where the hardware computes in it (a GPU from Ampere on; a CPU with AMX or AVX512-BF16), else fp32 "
        "(TUNESMITH_NO_BF16=1: always fp32).",
    )
    adam_epsilon: float = Field(1e-8, gt=0, description="AdamW epsilon; a larger value (1e-6) damps spikes.")
    shallow_grad_scale: float = Field(
        1.0, gt=0, le=1, description="Scale gradients of the embeddings and the first shallow_layers blocks (e.g. 0.1)."
    )
    shallow_layers: int = Field(0, ge=0, description="Blocks (from the bottom) that shallow_grad_scale applies to.")
    eval_every: int | None = Field(None, ge=1, description="Evaluate every N optimizer steps (and always at the end).")
    save_every: int | None = Field(None, ge=1, description="Checkpoint every N optimizer steps.")
    save_every_epoch: bool = Field(False, description="Also checkpoint at the end of every epoch.")
    keep_last_n: int | None = Field(3, ge=1, description="Checkpoints kept (oldest deleted first); null keeps all.")
    keep_best: bool = Field(False, description="Also keep the checkpoint with the best eval metric.")
    best_metric: str | None = Field(
        None, description="Eval metric for keep_best/early stopping (default: accuracy, or eval_loss for causal_lm)."
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, description="Stop after this many evaluations without improvement of best_metric."
    )
    regularize: RegularizeConfig | None = Field(
        None, description="A regulariser against forgetting: the trained weights (for PEFT methods the change "
        "they make to the base: LoRA's B x A, or the adapter's own tensors) are pulled toward where they started.")
    guard: GuardConfig = Field(default_factory=GuardConfig, description="Skip bad steps, roll back, stop.")
    log_every: int = Field(10, ge=1, description="Write a metrics line every N optimizer steps.")
    eval_batch_size: int = Field(64, ge=1, description="Examples per forward pass when evaluating.")
    group_by_length: bool = Field(
        True, description="Batch examples of similar length together (less padding, same randomness per epoch)."
    )
    num_threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores.")
    mmap_threshold_kb: int | None = Field(
        2048, ge=128, description="CPU (glibc): allocations of this size and more get their own mappings, "
        "returned to the OS when freed; keeps peak RSS near live memory. null: malloc's default."
    )
    padding_free: bool = Field(
        True, description="Causal LMs: each micro-batch is one row of its examples back to back (position ids "
        "restart, attention stays within each example): no padding, the padded batch's loss, random batches. "
        "Preference pairs, GRPO groups and decoder reward models' pairs: each prompt once, its answers after it "
        "(a 4-D attention mask; SDPA or eager attention). Not with prompt methods (their virtual tokens would "
        "be shared)."
    )
    compile: bool = Field(
        False, description="torch.compile the model for training (dynamic shapes). Off by default: on 2 CPU "
        "cores compiling took longer than it saved on the demo (benchmarks/bench_classification.py)."
    )
    lm_head_on_targets: bool = Field(
        True, description="Causal LMs: run the vocabulary projection only where the next token is trained "
        "(answers), not over prompts and padding. Same loss, less compute and memory."
    )
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=list, description="Also log to TensorBoard (<run>/tb/) and/or MLflow (a SQLite store "
        "next to the run directories, mlflow.db; MLFLOW_TRACKING_URI overrides it): the recipe as params, per-step "
        "and eval metrics, before/after scores, report.html, tags (task, method, model).")
    report_model: bool = Field(False, description="With mlflow: also log final/ (the trained model) as artifacts.")

    @field_validator("gradient_checkpointing", mode="before")
    @classmethod
    def _on_off_or_auto(cls, value):
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError("should be true, false or 'auto'")

    @field_validator("betas")
    @classmethod
    def _betas_in_range(cls, value):
        if value is not None and not all(0 <= b < 1 for b in value):
            raise ValueError(f"betas must each be in [0, 1) (got {list(value)})")
        return value

    @model_validator(mode="after")
    def _optimizer_settings(self):
        if self.betas is not None and self.optimizer not in ("adamw", "adamw_8bit", "lion"):
            raise ValueError(f"train.betas applies to adamw, adamw_8bit and lion, not {self.optimizer}")
        if self.momentum != 0.9 and self.optimizer != "sgd":
            raise ValueError(f"train.momentum applies to sgd, not {self.optimizer}")
        return self

    @field_validator("batch_size", mode="before")
    @classmethod
    def _whole_or_auto(cls, value):
        # One message for the union (pydantic would report the int and the 'auto' branch apart).
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("should be a whole number >= 1 or 'auto'")


def with_train(config, **updates):
    """A copy of the recipe ``config`` whose train section has ``updates`` (resolved settings:
    the searched micro-batch, the precision and checkpointing that ``auto`` chose)."""
    return config.model_copy(update={"train": config.train.model_copy(update=updates)})
