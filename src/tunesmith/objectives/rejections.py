"""On-policy rejections: the starting model writes the rejected answer of pairs given as prompt/chosen.

A pair whose rejected answer is what the policy itself would say teaches it to prefer
the chosen answer over its own habits (on-policy or "self-play" preference data), and
needs only good answers to collect. ``data.generate_rejected`` turns it on: every row
without a ``rejected`` answer gets one sampled (seeded by the recipe's seed) from the
starting model -- ``model.name``, or ``model.adapter_from``'s policy when the run
continues an SFT adapter -- rendered with the training chat template and system prompt.
Rows whose sample is empty or equal to the chosen answer are left out and counted.

The runner calls :func:`generate_rejections` after the data stage and before
tokenizing, so the generated answers are cached with the tokenized data (the cache key
names the starting model) and written to eval_set.jsonl like any other answer.
"""

from __future__ import annotations

import gc
import time

from tunesmith.data.template import as_text
from tunesmith.eval.decode import DecodeSettings, generate_answers
from tunesmith.objectives.causal_lm import CausalLMObjective

EXAMPLES_KEPT = 5  # generated rejections shown in the summary


def needs_rejection(row: dict) -> bool:
    """A pair given without its rejected answer."""
    return "chosen" in row and "rejected" not in row


def generate_rejections(data, config, tokenizer, device="cpu", log=print, show_progress: bool = True) -> dict:
    """Fill in the missing ``rejected`` answers of ``data``'s train, eval and test rows
    (in place) with the starting model's samples; returns counts for the summary:
    ``{"rows", "kept", "empty", "same_as_chosen", "mean_tokens", "seconds", "examples"}``."""
    settings = config.data.generate_rejected
    splits = {"train": data.train, "eval": data.eval, "test": data.test}
    todo = [(split, row) for split, rows in splits.items() for row in rows if needs_rejection(row)]
    info = {"rows": len(todo), "kept": 0, "empty": 0, "same_as_chosen": 0, "mean_tokens": 0.0, "seconds": 0.0,
            "examples": []}
    if not todo:
        return info
    started = time.perf_counter()
    log(f"data: the starting model writes {len(todo)} rejected answers ...")
    model = starting_policy(config, device)
    prompter = CausalLMObjective(tokenizer, config.data.max_length, config.data.system_prompt)
    room = max(1, config.data.max_length - settings.max_new_tokens)
    # A long prompt loses its start, as in training: the generated answer must still fit.
    prompts = [prompter.prompt_ids(row["prompt"])[0].tolist()[-room:] for _, row in todo]
    decode = DecodeSettings(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature,
                            top_p=settings.top_p, seed=config.seed, batch_size=config.train.eval_batch_size)
    from tqdm.auto import tqdm

    with tqdm(total=len(prompts), disable=not show_progress, unit="answer", leave=False,
              desc="rejections") as bar:
        answers = generate_answers(model, tokenizer, prompts, decode, device, progress=bar.update)
    del model
    gc.collect()
    dropped = set()
    for (split, row), answer in zip(todo, answers):
        text = answer["text"].strip()
        if not text:
            info["empty"] += 1
            dropped.add(id(row))
        elif text == _last_turn(row["chosen"]).strip():
            info["same_as_chosen"] += 1
            dropped.add(id(row))
        else:
            row["rejected"] = text
            info["kept"] += 1
            if len(info["examples"]) < EXAMPLES_KEPT:
                info["examples"].append({"split": split, "prompt": as_text(row["prompt"]), "rejected": text})
    for split, rows in splits.items():
        rows[:] = [r for r in rows if id(r) not in dropped]
    info["mean_tokens"] = round(sum(a["tokens"] for a in answers) / len(answers), 1)
    info["seconds"] = round(time.perf_counter() - started, 2)
    log(f"data: {info['kept']} rejected answers written ({info['mean_tokens']} tokens on average, "
        f"{info['seconds']} s); left out: {info['empty']} empty, {info['same_as_chosen']} equal to the chosen answer")
    return info


def starting_policy(config, device="cpu"):
    """The model the run starts from, for generation: ``model.adapter_from``'s trained
    policy when the run continues an adapter, else the base ``model.name``."""
    import torch

    if config.model.adapter_from:
        from tunesmith.methods.saved import load_trained
        from tunesmith.rundir import resolve_final_dir

        model, _, _ = load_trained(resolve_final_dir(config.model.adapter_from)[0])
    else:
        from tunesmith.models.load import load_model

        model, _ = load_model(config.model.name, "causal_lm", trust_remote_code=config.model.trust_remote_code,
                              dtype=torch.bfloat16 if config.model.dtype == "bfloat16" else torch.float32)
    return model.to(device).eval()


def _last_turn(answer) -> str:
    """An answer's text: the string, or its last (assistant) message's content."""
    return answer if isinstance(answer, str) else answer[-1]["content"]
