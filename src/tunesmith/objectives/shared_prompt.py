"""Answers that follow one prompt, computed with the prompt once.

A GRPO group's k sampled answers (and a preference pair's two) all follow the same
prompt. As separate rows ``prompt + answer`` the prompt is encoded once per answer;
packed here, a row holds the prompt once and then each of its answers, every answer at
the positions right after the prompt, and a 4-D attention mask lets an answer's tokens
see the prompt and the earlier tokens of their own answer only. For a causal model the
outputs on each answer token are then those of the separate row (a test checks loss and
gradients against the padded rows), for ``prompt x (answers - 1)`` fewer tokens of
compute and activation memory.

Only for models whose attention takes a custom 4-D mask: transformers' SDPA (a boolean
mask) and eager (an additive one) implementations; :func:`supports_shared_prompts` says
which, and callers keep separate rows for the rest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tunesmith.objectives.causal_lm import supports_logits_to_keep

MASK_KINDS = ("sdpa", "eager")


def supports_shared_prompts(model) -> bool:
    """Whether ``model`` (PEFT- or DDP-wrapped or not) can run :func:`pack_shared_prompts`
    rows: a causal LM whose attention takes a 4-D mask, without virtual prompt tokens."""
    return supports_logits_to_keep(model) and attention_kind(model) in MASK_KINDS


def attention_kind(model) -> str | None:
    """The attention implementation of ``model`` (unwrapped from DDP): "sdpa", "eager", ..."""
    inner = model
    while not hasattr(inner, "config") and hasattr(inner, "module"):  # DDP
        inner = inner.module
    config = getattr(inner, "config", None)
    return getattr(config, "_attn_implementation", None)


def pack_shared_prompts(rows: list[list[tuple[list[int], list[list[int]]]]], pad: int) -> dict[str, torch.Tensor]:
    """Pack ``rows`` -- each a list of ``(prompt_ids, [answer_ids, ...])`` groups -- into one
    batch row each, right-padded to a common width.

    Answers are numbered in order of appearance (row by row, group by group). Returns the
    model inputs (``input_ids``, ``position_ids``, a boolean ``attention_mask`` of shape
    ``(rows, 1, width, width)``), and per answer token: its id (``target_ids``), its
    answer's number (``target_answers``), and where its prediction is read
    (``target_rows``; ``target_keep`` indexes ``keep_columns``, the columns the LM head
    runs on). ``answer_ends`` holds each answer's last column (the prompt's last, for an
    empty answer); ``num_tokens`` the tokens that are not padding.

    Raises:
        ValueError: a group with an empty prompt (its first answer token has nothing to be predicted from).
    """
    ids_rows, positions_rows, group_rows, answer_rows = [], [], [], []
    target_rows, sources, target_ids, target_answers, ends = [], [], [], [], []
    number = group_number = 0
    for r, groups in enumerate(rows):
        ids, positions, group_of, answer_of = [], [], [], []
        for prompt, answers in groups:
            if not prompt:
                raise ValueError(f"row {r}: a group with an empty prompt cannot share it")
            last_prompt = len(ids) + len(prompt) - 1
            ids += prompt
            positions += range(len(prompt))
            group_of += [group_number] * len(prompt)
            answer_of += [-1] * len(prompt)
            for answer in answers:
                previous = last_prompt  # the column whose logits predict the next answer token
                for k, token in enumerate(answer):
                    target_rows.append(r)
                    sources.append(previous)
                    target_ids.append(token)
                    target_answers.append(number)
                    previous = len(ids)
                    ids.append(token)
                    positions.append(len(prompt) + k)
                    group_of.append(group_number)
                    answer_of.append(number)
                ends.append((r, previous))
                number += 1
            group_number += 1
        ids_rows.append(ids)
        positions_rows.append(positions)
        group_rows.append(group_of)
        answer_rows.append(answer_of)
    width = max(len(ids) for ids in ids_rows)

    def padded(values: list[list[int]], fill: int) -> torch.Tensor:
        return torch.tensor([v + [fill] * (width - len(v)) for v in values], dtype=torch.long)

    group, answer = padded(group_rows, -1), padded(answer_rows, -2)
    columns = torch.arange(width)
    # A token sees earlier tokens of its own group that are the prompt or its own answer.
    see = ((group[:, :, None] == group[:, None, :]) & (group[:, None, :] >= 0)
           & (columns[None, :, None] >= columns[None, None, :])
           & ((answer[:, None, :] == -1) | (answer[:, :, None] == answer[:, None, :])))
    # Padding sees itself: a query with nothing to attend to would give NaN (0/0) in SDPA.
    see |= torch.eye(width, dtype=torch.bool)[None] & (group[:, :, None] < 0)
    keep, keep_index = torch.unique(torch.tensor(sources, dtype=torch.long), return_inverse=True)
    return {"input_ids": padded(ids_rows, pad), "position_ids": padded(positions_rows, 0),
            "attention_mask": see[:, None], "keep_columns": keep, "target_keep": keep_index,
            "target_rows": torch.tensor(target_rows, dtype=torch.long),
            "target_ids": torch.tensor(target_ids, dtype=torch.long),
            "target_answers": torch.tensor(target_answers, dtype=torch.long),
            "answer_ends": torch.tensor(ends, dtype=torch.long).view(-1, 2),
            "num_tokens": (group >= 0).sum()}


def pair_rows(chosen: list[list[int]], rejected: list[list[int]], pad: int) -> dict[str, torch.Tensor]:
    """Preference pairs as shared-prompt rows, one per pair: the two rows' longest common
    prefix once (the prompt, and any answer tokens they share), then the rest of each.
    Answer ``2i`` is pair ``i``'s chosen row, ``2i + 1`` its rejected one. Empty when some
    pair shares no first token (nothing to share; keep separate rows)."""
    rows = []
    for first, second in zip(chosen, rejected):
        shared = next((k for k, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))
        if shared == 0:
            return {}
        rows.append([(first[:shared], [first[shared:], second[shared:]])])
    return pack_shared_prompts(rows, pad)


def attention_mask_for(model, mask: torch.Tensor) -> torch.Tensor:
    """The boolean see-mask as ``model``'s attention takes it: as is for SDPA, additive
    (0 where seen, the dtype's minimum elsewhere) for eager attention."""
    if attention_kind(model) != "eager":
        return mask
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else next(model.parameters()).dtype
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def shared_prompt_logps(model, batch) -> torch.Tensor:
    """The log-probability of every answer token of a :func:`pack_shared_prompts` batch
    (in ``target_ids`` order). The LM head runs only on the columns that predict an
    answer token.

    Raises:
        ValueError: ``model``'s attention takes no 4-D mask (flash attention, ...).
    """
    if attention_kind(model) not in MASK_KINDS:
        raise ValueError(f"answers packed behind a shared prompt need attention that takes a 4-D mask "
                         f"({' or '.join(MASK_KINDS)}), not {attention_kind(model)!r}: set train.padding_free: false")
    logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                   attention_mask=attention_mask_for(model, batch["attention_mask"]), use_cache=False,
                   logits_to_keep=batch["keep_columns"]).logits
    picked = logits[batch["target_rows"], batch["target_keep"]]
    return -F.cross_entropy(picked.float(), batch["target_ids"], reduction="none")


def per_answer_sums(values: torch.Tensor, batch, answers: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per answer number, the sum of ``values`` over its tokens and the token count."""
    index = batch["target_answers"]
    sums = torch.zeros(answers, dtype=values.dtype, device=values.device).index_add_(0, index, values)
    counts = torch.zeros(answers, dtype=torch.long, device=values.device).index_add_(0, index, torch.ones_like(index))
    return sums, counts
