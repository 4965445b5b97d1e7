"""An optional model judge: pairwise preference between two answers, order bias cancelled.

The judge reads the question and two answers and is asked which is better; what counts is
the probability it gives the next token "A" against "B". Each pair is judged twice with
the answers swapped: a verdict stands only when both orders agree, so a judge that
simply prefers the first position produces ties, not wins. Small models judge poorly (a
135M model is close to a coin); the report says how often the two orders disagreed, which
is the first thing to look at before trusting the win rate.

A judge is anything :func:`load_target` loads, or an OpenAI-compatible server
(``http://host:port/v1#model``, e.g. ``tunesmith serve``) that returns top log-probabilities.
"""

from __future__ import annotations

import math

from tunesmith.eval.agreement import wilson_interval

PROMPT = ("You compare two answers to the same question. Question:\n{question}\n\nAnswer A:\n{a}\n\n"
          "Answer B:\n{b}\n\nWhich answer is better: more correct, relevant and helpful? Reply with one letter, "
          "A or B.")


def judge_pairs(prefer, items: list[dict]) -> dict:
    """Judge ``items`` (``prompt``, ``baseline``, ``candidate``) with ``prefer(question, a, b)``
    -> log P("A") - log P("B"); returns per-item verdicts and the candidate's win rate."""
    verdicts = []
    for item in items:
        first = prefer(item["prompt"], item["baseline"], item["candidate"])  # candidate shown as B
        second = prefer(item["prompt"], item["candidate"], item["baseline"])  # candidate shown as A
        candidate_first, candidate_second = first < 0, second > 0
        if candidate_first and candidate_second:
            verdict = "candidate"
        elif not candidate_first and not candidate_second:
            verdict = "baseline"
        else:
            verdict = "tie"  # the two orders disagree: position, not content, decided
        verdicts.append({"id": item["id"], "verdict": verdict, "margins": [first, second]})
    wins = sum(v["verdict"] == "candidate" for v in verdicts)
    losses = sum(v["verdict"] == "baseline" for v in verdicts)
    decided = wins + losses
    low, high = wilson_interval(wins, decided) if decided else (None, None)
    return {"verdicts": verdicts, "wins": wins, "losses": losses, "ties": len(verdicts) - decided,
            "win_rate": wins / decided if decided else None, "ci95": [low, high],
            "order_disagreement": (len(verdicts) - decided) / len(verdicts) if verdicts else None}


def model_preference(target):
    """``prefer`` for a loaded causal LM: the next-token log-probabilities of "A" and "B"
    after the judge prompt, rendered with the model's chat template."""
    import torch

    objective = target.objective()
    tokenizer = target.tokenizer
    letters = [tokenizer.encode(letter, add_special_tokens=False)[-1] for letter in ("A", "B")]

    @torch.inference_mode()
    def prefer(question: str, a: str, b: str) -> float:
        ids = objective.prompt_ids(PROMPT.format(question=question, a=a, b=b)).to(target.model.device)
        logits = target.model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, -1)
        return float(logprobs[letters[0]] - logprobs[letters[1]])

    return prefer


def served_preference(url: str):
    """``prefer`` for a model behind an OpenAI-compatible server: ``http://host:port/v1#model``."""
    import httpx

    base, _, model = url.partition("#")

    def prefer(question: str, a: str, b: str) -> float:
        body = {"model": model or "default", "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 10,
                "messages": [{"role": "user", "content": PROMPT.format(question=question, a=a, b=b)}]}
        reply = httpx.post(base.rstrip("/") + "/chat/completions", json=body, timeout=120).json()
        top = reply["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        found = {t["token"].strip(): t["logprob"] for t in top}
        # A letter outside the top list is at most as likely as the least likely listed token.
        floor = min(found.values(), default=-math.inf) - math.log(2)
        return found.get("A", floor) - found.get("B", floor)

    return prefer
