"""The recipe sections of the stages beyond SFT: the reward model and preference tuning."""

from __future__ import annotations

from typing import Literal

import re

from pydantic import Field, model_validator

from tunesmith.config.section import Section


class RejectionConfig(Section):
    """data.generate_rejected: on-policy rejections written by the starting model."""

    max_new_tokens: int = Field(64, ge=1, description="Longest generated rejection, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature (sampled, seeded by the recipe's "
                               "seed, so prompts repeated across rows get different answers).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling: keep the smallest set of tokens whose "
                         "probability reaches this.")


class RewardConfig(Section):
    margin: float = Field(0.0, description="task: reward -- the Bradley-Terry loss is -log sigmoid(r_chosen - "
                          "r_rejected - margin): a positive margin asks chosen to win by at least that much.")


class PreferenceConfig(Section):
    loss: Literal["dpo", "ipo", "orpo", "simpo", "kto"] = Field(
        "dpo", description="task: preference -- dpo (sigmoid on the log-ratio gain over the reference), ipo "
        "(squared, per-token log-ratios), orpo (NLL + odds ratio, no reference), simpo (length-averaged, "
        "target margin, no reference) or kto (unpaired thumbs up/down; pairs are split into one of each).")
    beta: float = Field(0.1, gt=0, description="Strength of the preference term: DPO/IPO/KTO's beta (how far "
                        "from the reference the policy may move), SimPO's reward scale.")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo, simpo: the share of pairs assumed "
                                   "mislabelled (conservative DPO).")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target reward margin gamma (the loss asks the "
                               "chosen answer to win by gamma/beta per token).")
    orpo_lambda: float = Field(0.1, gt=0, description="orpo: weight of the odds-ratio term against the chosen "
                               "answers' NLL, whose weight is 1 (ORPO's lambda; TRL's beta).")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the desirable examples' loss.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the undesirable examples' loss.")
    precompute_reference: bool = Field(
        False, description="Compute the reference model's log-probs once before training (cached with the "
        "tokenized data) instead of a reference forward pass per batch: faster, and a full/freeze run keeps "
        "no frozen copy in memory. Always on for a run that continues an adapter (model.adapter_from): "
        "its reference is the starting policy.")


class RewardEntry(Section):
    type: Literal["regex", "format", "exact", "length", "reward_model", "classifier"] = Field(
        description="regex (1 when pattern occurs in the answer), format (1 when the whole answer matches "
        "pattern), exact (1 when the answer equals the row's reference answer), length (1 within "
        "min_words..max_words, less outside), reward_model (a task: reward run's reward), classifier (a "
        "classification run's probability of label).")
    weight: float = Field(1.0, description="This entry's weight in the answer's reward (a weighted sum).")
    pattern: str | None = Field(None, description="regex, format: a Python regular expression.")
    min_words: int | None = Field(None, ge=0, description="length: the fewest words that score 1.")
    max_words: int | None = Field(None, ge=1, description="length: the most words that score 1.")
    run: str | None = Field(None, description="reward_model, classifier: the run directory (or its final/).")
    label: str | None = Field(None, description="classifier: the label whose probability is the reward.")

    @model_validator(mode="after")
    def _fields_of_the_type(self):
        needs = {"regex": ["pattern"], "format": ["pattern"], "reward_model": ["run"], "classifier": ["run", "label"]}
        missing = [name for name in needs.get(self.type, []) if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.type} reward needs {' and '.join(missing)}")
        if self.type == "length" and self.min_words is None and self.max_words is None:
            raise ValueError("a length reward needs min_words or max_words")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {exc}") from None
        return self


class GrpoConfig(Section):
    rewards: list[RewardEntry] = Field(default_factory=list, description="task: grpo -- what an answer earns: "
                                       "a weighted sum of these entries (at least one).")
    num_generations: int = Field(8, ge=2, description="Answers sampled per prompt (the group whose mean and "
                                 "spread normalise the advantages).")
    max_new_tokens: int = Field(48, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    kl_beta: float = Field(0.0, ge=0, description="Weight of the KL penalty to the reference model (0: none, "
                           "TRL's default; the reference is then not needed).")
    epsilon: float = Field(0.2, gt=0, description="Clipping range of the probability ratio in the surrogate "
                           "objective.")


class DistillConfig(Section):
    """task: distill -- a student learns a trained teacher's output distribution."""

    teacher: str | None = Field(None, description="task: distill -- the teacher: a trained classification or "
                                "chat run (runs/<name> or its final/). The recipe's data has the teacher's kind "
                                "of rows, and teacher and student share a tokenizer.")
    keep_every: int | None = Field(None, ge=2, description="Build the student from the teacher by keeping every "
                                   "k-th transformer layer (the last one included), initialised from the "
                                   "teacher's weights; model.name is then the teacher's base and the method one "
                                   "that saves full weights (full, freeze, bitfit). Without it the student is "
                                   "model.name.")
    temperature: float = Field(2.0, gt=0, description="Softens both distributions; the distillation loss is "
                               "scaled by temperature^2 so its gradients keep their size.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation (KL) loss; 1 - alpha weighs "
                         "the hard-label loss (classification) or the SFT loss on answer tokens (chat).")
    hidden_weight: float = Field(0.0, ge=0, description="Weight of hidden-state matching: mean squared error "
                                 "between student layer i and the teacher layer it was taken from (or i x L_t / "
                                 "L_s). Needs a student as wide as the teacher and cache_top_k: 0.")
    cache_top_k: int = Field(20, ge=0, description="Run the teacher once over the training rows before training "
                             "and keep its top-k logits per target (a classifier keeps every class), instead "
                             "of running it on every batch; 0 runs it on every batch (the full distribution).")
