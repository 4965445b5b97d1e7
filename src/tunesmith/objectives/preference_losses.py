"""The preference losses, as plain functions of sequence log-probabilities.

Each takes per-example tensors and returns per-example losses (the objective sums them;
the loop divides by the pairs of the accumulation window). The formulas are those of
the papers, written as TRL writes them, so a first batch gives TRL's loss:

- DPO (Rafailov et al. 2023), with cDPO's label smoothing: log-probs summed over the
  completion, ``-(1-e) log s(b d) - e log s(-b d)`` with ``d`` the policy's log-ratio
  gain over the reference's.
- IPO (Azar et al. 2023, eq. 17): ``(d - 1/(2b))^2`` on log-probs averaged per
  completion token (TRL's normalisation, agreed with the IPO authors).
- SimPO (Meng et al. 2024): no reference; the length-averaged log-probs' gap minus the
  target margin ``gamma/b``, through DPO's sigmoid (TRL's CPO trainer, ``cpo_alpha=0``).
- ORPO (Hong et al. 2024): NLL of the chosen answer minus ``lambda log s(log odds)``,
  the odds from length-averaged log-probs; no reference.
- KTO (Ethayarajh et al. 2024): unpaired; ``1 - s(b (r - z))`` for a desirable answer
  and ``1 - s(b (z - r))`` for an undesirable one, each weighted, ``z`` the batch's
  (clamped, detached) KL estimate from mismatched prompt/answer pairs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("dpo", "ipo", "orpo", "simpo", "kto")
# Which losses compare the policy with a reference model, and which average log-probs over tokens.
USES_REFERENCE = {"dpo": True, "ipo": True, "kto": True, "orpo": False, "simpo": False}
LENGTH_AVERAGED = {"dpo": False, "ipo": True, "kto": False, "orpo": True, "simpo": True}


def dpo(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float, label_smoothing: float = 0.0):
    """DPO per pair from the log-ratios ``log pi/pi_ref`` (summed over completion tokens)."""
    d = beta * (chosen_ratio - rejected_ratio)
    return -F.logsigmoid(d) * (1 - label_smoothing) - F.logsigmoid(-d) * label_smoothing


def ipo(chosen_ratio: torch.Tensor, rejected_ratio: torch.Tensor, beta: float):
    """IPO per pair from per-token averaged log-ratios."""
    return (chosen_ratio - rejected_ratio - 1 / (2 * beta)) ** 2


def simpo(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, beta: float, gamma: float,
          label_smoothing: float = 0.0):
    """SimPO per pair from per-token averaged policy log-probs."""
    d = beta * (chosen_logps - rejected_logps - gamma / beta)
    return -F.logsigmoid(d) * (1 - label_smoothing) - F.logsigmoid(-d) * label_smoothing


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x < 0``, stable at both ends (Maechler 2012)."""
    return torch.where(x > -0.6931471805599453, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def orpo_odds_term(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> torch.Tensor:
    """``log s(log odds(chosen) - log odds(rejected))`` per pair, from per-token averaged log-probs."""
    chosen_logps, rejected_logps = chosen_logps.float(), rejected_logps.float()
    log_odds = (chosen_logps - rejected_logps) - (log1mexp(chosen_logps) - log1mexp(rejected_logps))
    return F.logsigmoid(log_odds)


def kto(ratios: torch.Tensor, desirable: torch.Tensor, kl: torch.Tensor, beta: float,
        desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> torch.Tensor:
    """KTO per example from the log-ratios (summed), whether each answer is desirable, and
    the KL estimate ``kl`` (a detached scalar)."""
    good = desirable_weight * (1 - torch.sigmoid(beta * (ratios - kl)))
    bad = undesirable_weight * (1 - torch.sigmoid(beta * (kl - ratios)))
    return torch.where(desirable, good, bad)


def kl_estimate(kl_ratios: torch.Tensor) -> torch.Tensor:
    """KTO's reference point: the mean log-ratio of mismatched prompt/answer pairs, at
    least zero, with no gradient (as in the paper and TRL)."""
    return kl_ratios.detach().mean().clamp(min=0)
