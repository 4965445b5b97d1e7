"""The recipe schema: one pydantic model per YAML section.

Every field carries its documentation next to it, so error messages, ``--help`` and
the docs come from one place. All sections forbid unknown keys: a typo must fail
loudly instead of silently training with a default.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from tunesmith.config.data_sections import (  # noqa: F401 (re-exported)
    AugmentConfig,
    CleanConfig,
    DedupConfig,
    ExpandVocabConfig,
    LastTurnsConfig,
    SourceConfig,
    as_sources,
)
from tunesmith.config.guard import GuardConfig  # noqa: F401 (re-exported)
from tunesmith.config.train_section import TrainConfig  # noqa: F401 (re-exported)
from tunesmith.config.methods import LoraMethod, Method, default_lr, method_info
from tunesmith.config.section import SafeName, Section
from tunesmith.config.stages import (  # noqa: F401 (re-exported)
    DistillConfig, GrpoConfig, PreferenceConfig, RejectionConfig, RewardConfig)
from tunesmith.objectives.tasks import TASKS, spec_for, teacher_meta, tasks_with_shape

# Methods whose saved adapter has the shape of a freshly built one (PiSSA saves rank 2r,
# AdaLoRA prunes ranks), so model.adapter_from can load it into this run's model.
ADAPTER_CONTINUABLE = ("lora", "qlora", "ia3")
# Methods that train new vocabulary rows: every row (full) or only the new ones (PEFT's
# trainable_token_indices beside LoRA).
VOCAB_METHODS = ("full", "lora", "qlora")

# The task names of the registry (classification, causal_lm = chat SFT, pretrain, ...).
Task = Literal[tuple(TASKS)]


class ModelConfig(Section):
    name: str = Field(
        description="Base model: 'builtin:minilm', 'builtin:smollm2-135m', a local folder, "
        "a .gguf file, or a hub id such as 'org/model'."
    )
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="Dtype the base weights are loaded in."
    )
    trust_remote_code: bool = Field(
        False, description="Run the model folder's own Python (hub models with custom code). Never set by a "
        "recipe, which may come from anyone: the CLI flag --trust-remote-code switches it on for one command.")
    adapter_from: str | None = Field(
        None, description="A finished run (its directory or final/) whose adapter this run starts from instead of "
        "a fresh one: same base model and method type (lora, qlora, ia3). eval_before then scores that adapter.")
    add_tokens: list[str] = Field(
        default_factory=list, description="New tokens (domain words, Chinese terms) added to the tokenizer; each "
        "embedding row starts as the mean of the rows of the pieces it replaces and trains (method full, lora or "
        "qlora: only the new rows, not the whole matrix).")
    expand_vocab: ExpandVocabConfig | None = Field(
        None, description="Mine new tokens from a corpus: frequent words (jieba segments Chinese) that the "
        "tokenizer splits into min_pieces or more pieces. Added like add_tokens.")
    new_tokens_lr_scale: float = Field(
        10.0, gt=0, description="Learning-rate multiplier of the new vocabulary rows under lora and qlora. A row "
        "gets a gradient only where its token occurs, so at the adapter's rate new rows lag behind (measured in "
        "benchmarks/vocab_expansion.py); full fine-tuning trains them with the whole matrix at train.lr.")


    @field_validator("trust_remote_code")
    @classmethod
    def _not_from_a_recipe(cls, value: bool) -> bool:
        if value:
            raise ValueError("a recipe cannot switch on remote code (it would run the model folder's Python); "
                             "pass --trust-remote-code to the command instead")
        return value

class DataConfig(Section):
    train: list[SourceConfig] = Field(min_length=1, description="Training sources (one or more).")
    eval: list[SourceConfig] | None = Field(
        None, description="Evaluation sources. When absent, eval_size rows are split off the training data."
    )
    eval_size: float = Field(
        0.1, gt=0, description="Held-out share (< 1) or row count (>= 1) when no eval source is given."
    )
    test_size: float = Field(
        0, ge=0, description="Test share (< 1) or row count (>= 1) split off like eval, kept out of training "
        "and evaluation (written to test_set.jsonl). Only when eval is split off the training data.")
    split_by: Literal["auto", "random", "stratified", "time", "group"] = Field(
        "auto", description="How eval (and test) rows are split off: auto = stratified by label for "
        "classification, random for chat; time = oldest rows train, newest eval/test (needs time_field); "
        "group = a group never crosses splits (needs group_field).")
    time_field: str | None = Field(None, description="Column with a timestamp (ISO 8601 or Unix) for split_by: time.")
    group_field: str | None = Field(None, description="Column with a group id (user, document) for split_by: group.")
    max_train_samples: int | None = Field(None, ge=1, description="Seeded subsample of the training rows.")
    max_eval_samples: int | None = Field(None, ge=1, description="Seeded subsample of the eval rows.")
    mix_total: int | None = Field(
        None,
        ge=1,
        description="Size of the mixed training set when sources carry weights; each source is "
        "sampled (with replacement if it is too small) to its share.",
    )
    cache: bool = Field(
        True, description="Keep the prepared, tokenized data on disk (keyed by the sources' content, this data "
        "section, the tokenizer and template) and reuse it when a later run has the same inputs.")
    mix_with_replacement: bool = Field(
        False, description="Mixing: draw rows independently with replacement, instead of repeating a small "
        "source whole and sampling the rest without replacement.")
    max_length: int = Field(256, ge=8, description="Tokens per example; longer examples are truncated.")
    text_field: str = Field("text", description="Column holding the text (classification and raw-text files).")
    messages_field: str = Field(
        "messages", description="Column holding a chat's turns (OpenAI messages or sharegpt from/value turns); "
        "'conversations' and alpaca columns are recognised too.")
    text_delimiter: str | None = Field(
        None, description="Raw .txt files: the string between documents (e.g. '\\n\\n', or '\\n%\\n' for fortune "
        "files); absent: one document per line.")
    label_field: str = Field("label", description="Column holding the label (classification files).")
    labels: list[str] | None = Field(
        None, description="The label set, in id order. Inferred (sorted) from the training data when absent."
    )
    system_prompt: str | None = Field(
        None, description="System message added to chats that have none (chat SFT)."
    )
    on_error: Literal["raise", "drop", "quarantine"] = Field(
        "raise",
        description="Invalid rows: 'raise' stops with every bad row listed; 'drop' leaves them out (counted); "
        "'quarantine' also writes them with their reasons to rejects.jsonl in the run directory.",
    )
    chat_template: str | None = Field(
        None, description="Chat SFT: the template to render chats with, replacing the tokenizer's: a name "
        "(chatml, zephyr, llama3, alpaca), a .jinja file, or Jinja text. Saved with the run, so serving uses it.")
    loss_on: Literal["all_answers", "last_answer"] = Field(
        "all_answers", description="Chat SFT: train on every assistant answer, or only on the last one "
        "(earlier turns are then context).")
    packing: bool = Field(
        False, description="Chat SFT: pack short chats into rows of max_length tokens (position ids restart per "
        "chat, attention stays within each chat); fewer padding tokens, same loss.")
    history: Literal["keep", "drop_oldest"] | LastTurnsConfig = Field(
        "keep", description="Chat SFT, long multi-turn chats: keep (over-long chats follow on_overlength), "
        "drop_oldest (an over-long chat loses its oldest exchanges until it fits, keeping the system prompt and "
        "the last answer whole), or {last_n_turns: N} (every chat keeps its last N exchanges). Counted in the "
        "summary.")
    on_overlength: Literal["truncate", "drop", "raise"] = Field(
        "truncate", description="Rows longer than max_length tokens: truncate (on the right), drop, or stop with "
        "the rows named. Counted in the summary either way.")
    min_gap: float = Field(1.0, ge=0, description="Preference rows given as ratings (prompt/response/score): "
                           "two answers to the same prompt make a pair when their scores differ by at least this.")
    generate_rejected: RejectionConfig | None = Field(
        None, description="Preference rows given as prompt/chosen only: the starting model (model.name, or "
        "model.adapter_from's policy) writes each row's rejected answer (on-policy rejections). Rows that have "
        "a rejected answer keep it. Cached with the tokenized data.")
    clean: CleanConfig | None = Field(None, description="Text cleaning steps (absent: the text is used as read).")
    augment: AugmentConfig | None = Field(
        None, description="Augment the training rows (after the split; eval never is). Each new row is marked "
        "with 'augmented' and 'augmented_from'.")
    dedup: DedupConfig | None = Field(None, description="Duplicate removal over all training sources (absent: none).")
    leakage: Literal["report", "remove", "error"] = Field(
        "report", description="Eval rows that also occur in the training sources (exactly, or nearly with "
        "dedup.near): report them (a warning in train, a red box in the report), remove them from eval, or stop "
        "with an error naming them.")
    max_drop_fraction: float = Field(
        0.02, ge=0, le=1,
        description="With drop/quarantine: stop when more than this share of a source's rows is invalid "
        "(a mostly broken file is a wrong file, not noise).",
    )

    _normalise_train = field_validator("train", mode="before")(lambda cls, v: as_sources(v))
    _normalise_eval = field_validator("eval", mode="before")(lambda cls, v: as_sources(v))

    @field_validator("eval_size", "test_size")
    @classmethod
    def _share_or_count(cls, size: float) -> float:
        if size >= 1 and size != int(size):
            raise ValueError(f"a share (< 1) or a row count (a whole number >= 1), not {size}")
        return size

    @model_validator(mode="after")
    def _weights_need_total(self):
        weighted = [s.path for s in self.train if s.weight is not None]
        if weighted and len(weighted) != len(self.train):
            raise ValueError("either every data.train source has a weight or none does")
        if weighted and self.mix_total is None:
            raise ValueError("data.train sources have weights but data.mix_total is not set")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError("data.labels has duplicates")
        if self.split_by == "time" and not self.time_field:
            raise ValueError("data.split_by: time needs data.time_field (the column holding the timestamp)")
        if self.split_by == "group" and not self.group_field:
            raise ValueError("data.split_by: group needs data.group_field (the column holding the group id)")
        if 0 < self.eval_size < 1 and 0 < self.test_size < 1 and self.eval_size + self.test_size >= 1:
            raise ValueError(f"data.eval_size + data.test_size = {self.eval_size + self.test_size:g} leaves no "
                             "training rows; together they must stay below 1")
        if self.test_size and self.eval:
            raise ValueError("data.test_size splits test rows off with eval; with data.eval given, give the test "
                             "set as a separate file instead")
        return self


# The composite scorecard's dimensions (eval/scorecard.py): the task metric, the general
# questions (out of domain), training time, peak memory, and the blind human review.
SCORECARD_DIMENSIONS = ("task", "ood", "time", "memory", "human")


class EvalConfig(Section):
    probes: list[str] = Field(
        default_factory=list,
        description="Sentences (classification) or prompts (causal_lm) answered before and after training.",
    )
    max_new_tokens: int = Field(48, ge=1, description="Most tokens per generated answer (probes, held-out answers, "
                                "general questions).")
    generate: bool = Field(True, description="Chat runs: answer held-out prompts before and after training and score "
                           "the answers against the references (BLEU, chrF, ROUGE, exact match, token F1, with 95% "
                           "intervals).")
    max_generate_samples: int = Field(100, ge=1, description="Most held-out chats answered for the generation scores.")
    temperature: float = Field(0.0, ge=0, description="0 decodes greedily; above 0 samples (seeded by `seed`).")
    forgetting: bool = Field(True, description="Chat runs: answer the packaged general questions (60 English, 40 "
                             "Chinese) before and after training and report the change.")
    forgetting_threshold: float = Field(0.1, gt=0, description="Warn when a general score gets worse by more than "
                                        "this fraction (0.1 = 10%), and suggest mixing general data.")
    scorecard: dict[str, float] = Field(default_factory=dict, description="Weights of the composite scorecard's "
                                        "dimensions: task, ood (general questions), time, memory, human; "
                                        "empty = equal weights over the dimensions measured.")

    @field_validator("scorecard")
    @classmethod
    def _known_dimensions(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if name not in SCORECARD_DIMENSIONS:
                raise ValueError(f"unknown scorecard dimension {name!r}; use {', '.join(SCORECARD_DIMENSIONS)}")
            if weight < 0:
                raise ValueError(f"scorecard weight of {name!r} is negative ({weight})")
        return value


class RecipeConfig(Section):
    name: SafeName = Field(description="Run name; the run directory is <output_dir>/<name> (one folder name: "
                           "letters, digits, '.', '_', '-').")
    task: Task = Field(description="The training stage: classification (a label per text), causal_lm (chat SFT, "
                       "loss on answers), pretrain (raw text, loss on every token), reward (a reward model "
                       "on preference pairs), preference (DPO, IPO, ORPO, SimPO or KTO on a causal LM) or grpo "
                       "(online RL on prompts, with grpo.rewards) or distill (a student learns a trained teacher run's outputs, "
                       "with distill.teacher).")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="Seeds data order, splits, sampling and initialisation: same seed, same run.")
    output_dir: str = Field("runs", description="Parent folder of run directories.")
    model: ModelConfig = Field(description="The base model.")
    data: DataConfig = Field(description="Sources, validation, cleaning, splits, mixing, tokenization.")
    method: Method = Field(default_factory=LoraMethod, description="The fine-tuning method; `type` picks it.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="The training loop.")
    eval: EvalConfig = Field(default_factory=EvalConfig, description="What is measured before and after "
                            "training: probes, held-out answers, the forgetting check, the scorecard.")
    reward: RewardConfig = Field(default_factory=RewardConfig, description="Reward-model training (task: reward).")
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig,
                                         description="Preference tuning (task: preference): the loss and its settings.")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig, description="Online RL (task: grpo): rewards and sampling.")
    distill: DistillConfig = Field(default_factory=DistillConfig,
                                   description="Knowledge distillation (task: distill): the teacher and the loss.")

    @field_validator("method", mode="before")
    @classmethod
    def _default_method_type(cls, value):
        # `method: {r: 16}` means the default method; the tagged union needs the tag spelled out.
        if isinstance(value, dict) and "type" not in value:
            return {"type": "lora", **value}
        return value

    @model_validator(mode="after")
    def _cross_field_rules(self):
        shape = spec_for(self).shape
        if shape != "classification" and self.data.labels is not None:
            raise ValueError(f"data.labels only applies to task: {' or '.join(tasks_with_shape('classification'))}")
        # Chats and preference pairs are rendered through the chat template.
        chat_tasks = " or ".join(tasks_with_shape("chat", "preference", "prompt"))
        if shape not in ("chat", "preference", "prompt") and (self.data.system_prompt is not None or self.data.chat_template):
            raise ValueError(f"data.system_prompt and data.chat_template only apply to task: {chat_tasks}")
        if shape != "preference" and self.data.generate_rejected is not None:
            raise ValueError(f"data.generate_rejected only applies to task: {' or '.join(tasks_with_shape('preference'))}")
        if shape != "chat" and self.data.loss_on != "all_answers":
            raise ValueError(f"data.loss_on only applies to task: {' or '.join(tasks_with_shape('chat'))}")
        if (self.model.add_tokens or self.model.expand_vocab) and (
                self.method.type not in VOCAB_METHODS or self.task == "distill" or self.model.adapter_from):
            raise ValueError("model.add_tokens / model.expand_vocab train new embedding rows: use method full, lora "
                             "or qlora (not " + ("a distillation student, which shares its teacher's tokenizer"
                                                 if self.task == "distill" else "model.adapter_from" if
                                                 self.model.adapter_from else self.method.type) + ")")
        regularize = self.train.regularize
        if regularize and regularize.type == "ewc" and shape != "chat" and not regularize.data:
            raise ValueError("train.regularize.data: ewc estimates its Fisher on general data; name a dataset "
                             f"of this task's shape ({shape}) (chat runs default to builtin:chatterbot)")
        if regularize and regularize.type == "ewc" and self.method.type == "qlora":
            raise ValueError("train.regularize: ewc needs the gradients of the base weights, which qlora keeps "
                             "in 4 bits; use type: l2sp")
        if shape != "chat" and self.data.history != "keep":
            raise ValueError(f"data.history only applies to task: {' or '.join(tasks_with_shape('chat'))}")
        if self.task != "reward" and self.reward.margin:
            raise ValueError("reward.margin only applies to task: reward")
        if self.task == "distill":
            self._check_distill()
        if self.train.label_smoothing and self.task not in ("classification", "causal_lm"):
            raise ValueError("train.label_smoothing applies to task: classification or causal_lm")
        for task, section in (("preference", self.preference), ("grpo", self.grpo), ("distill", self.distill)):
            changed = [k for k, f in type(section).model_fields.items()
                       if getattr(section, k) != (f.default_factory() if f.default_factory else f.default)]
            if self.task != task and changed:
                raise ValueError(f"{task}.{changed[0]} only applies to task: {task}")
        if self.task == "grpo" and not self.grpo.rewards:
            raise ValueError("task: grpo needs grpo.rewards: at least one entry (regex, format, exact, length, "
                             "reward_model or classifier)")
        if self.data.packing and shape not in ("chat", "text"):
            raise ValueError(f"data.packing only applies to task: {' or '.join(tasks_with_shape('chat', 'text'))}")
        if self.model.adapter_from and self.method.type not in ADAPTER_CONTINUABLE:
            raise ValueError(f"model.adapter_from continues a {', '.join(ADAPTER_CONTINUABLE)} adapter, not "
                             f"method {self.method.type} (a full or freeze run's final/ is a model: use it as "
                             "model.name)")
        if self.model.adapter_from and getattr(self.method, "init", None) == "pissa":
            raise ValueError("model.adapter_from cannot start a PiSSA run: PiSSA changes the base weights the "
                             "loaded adapter was trained on")
        if self.data.packing and method_info(self.method.type).prompt_based:
            raise ValueError(f"data.packing cannot be combined with method {self.method.type}: its virtual tokens "
                             "would be shared by every chat packed into a row")
        return self

    def _check_distill(self) -> None:
        teacher = teacher_meta(self.distill.teacher)
        if self.data.packing:
            raise ValueError("data.packing cannot be combined with task: distill (the teacher's targets are "
                             "aligned with unpacked rows)")
        if self.distill.hidden_weight and self.distill.cache_top_k:
            raise ValueError("distill.hidden_weight needs the teacher's hidden states on every batch: set "
                             "distill.cache_top_k: 0")
        if self.distill.keep_every:
            if self.model.name != teacher["base_model"]:
                raise ValueError(f"distill.keep_every builds the student from the teacher, so model.name must be "
                                 f"the teacher's base {teacher['base_model']!r} (got {self.model.name!r})")
            if method_info(self.method.type).family != "weights":
                raise ValueError(f"distill.keep_every makes a new model, which method {self.method.type} cannot "
                                 "save as an adapter of a base: use method full, freeze or bitfit")

    @property
    def model_task(self) -> str:
        """The model head the task trains (the registry's ``head``: continued pretraining trains a causal LM too)."""
        return spec_for(self).head

    @property
    def learning_rate(self) -> float:
        """The configured learning rate, or the method's recommended default."""
        return self.train.lr if self.train.lr is not None else default_lr(self.method)
