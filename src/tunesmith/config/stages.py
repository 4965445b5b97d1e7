"""The recipe sections of the stages beyond SFT: the reward model and preference tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tunesmith.config.section import Section


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
