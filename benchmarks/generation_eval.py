"""Generation-eval throughput: Tunesmith's batched decoder vs two transformers anchors.

Same model (builtin:smollm2-135m), same prompts (the first N user turns of
builtin:identity + builtin:chatterbot-en, rendered with the chat template and our system
prompt), same greedy decoding and max_new_tokens, all in one process:

- anchor 1: a plain loop of ``model.generate``, one prompt at a time;
- anchor 2: the transformers ``text-generation`` pipeline with ``batch_size`` (left
  padding, as the pipeline documentation asks for decoder-only models);
- Tunesmith: ``eval.decode.generate_answers`` (continuous batching: left padding, one KV
  cache, finished rows leave and the next prompts join the running batch; in fp32 the LM
  head screens the vocabulary in bf16, ``models/greedy_head.py``). ``--plain-head`` also
  times it with the plain fp32 head, to show what the screen adds.

It also prints the workload (mean answer length, how many answers hit max_new_tokens):
continuous batching pays when answers end at different lengths, and cannot when every
answer runs to the limit. Each system runs ``--reps`` times after one warm-up pass;
prints examples/s (min/median/max), the ratios, and whether the greedy answers are the
same texts.

``--precision bf16`` runs every system under CPU bf16 autocast (as a bf16 run's own
evaluation decodes).

Usage: python benchmarks/generation_eval.py [--prompts 64] [--max-new-tokens 32] [--reps 3]
                                            [--anchors loop,pipeline] [--precision fp32|bf16] [--plain-head]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def prompts_of(n: int):
    from tunesmith.data.sources import load_records
    from tunesmith.eval.generation import chat_items

    rows = load_records("builtin:identity", "chat") + load_records("builtin:chatterbot-en", "chat")
    return chat_items(rows[::max(1, len(rows) // n)][:n])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--anchors", default="loop,pipeline",
                        help="comma-separated: loop, pipeline (the loop takes minutes at long answers)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--plain-head", action="store_true",
                        help="also time Tunesmith with the plain fp32 LM head (no bf16 screen)")
    args = parser.parse_args()

    from transformers import pipeline

    from tunesmith.eval.decode import DecodeSettings, end_ids, generate_answers
    from tunesmith.models.load import load_model
    from tunesmith.objectives.causal_lm import CausalLMObjective

    model, tokenizer = load_model("builtin:smollm2-135m", "causal_lm")
    model.eval()
    objective = CausalLMObjective(tokenizer, 512, "You are a helpful AI assistant.")
    items = prompts_of(args.prompts)
    ids = [objective.prompt_ids(item["messages"])[0].tolist() for item in items]
    texts = [tokenizer.decode(i) for i in ids]
    stops = sorted(end_ids(model, tokenizer))
    greedy = dict(do_sample=False, temperature=None, top_p=None, top_k=None, max_new_tokens=args.max_new_tokens,
                  eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)

    def cut(new: list[int]) -> str:
        k = next((j for j, t in enumerate(new) if t in stops), len(new))
        return tokenizer.decode(new[:k], skip_special_tokens=True).strip()

    @torch.inference_mode()
    def loop():
        out = []
        for p in ids:
            x = torch.tensor([p])
            out.append(cut(model.generate(input_ids=x, attention_mask=torch.ones_like(x), **greedy)[0, len(p):].tolist()))
        return out

    tokenizer.padding_side = "left"
    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer, device="cpu")

    def pipelined():
        results = pipe(texts, batch_size=args.batch_size, return_full_text=False, **greedy)
        # The pipeline decodes with skip_special_tokens=False semantics per its defaults; cut at
        # the first end-of-turn marker the way ours does.
        out = []
        for r in results:
            text = r[0]["generated_text"]
            for token in tokenizer.convert_ids_to_tokens(stops):
                text = text.split(token)[0]
            out.append(text.strip())
        return out

    settings = DecodeSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)

    def ours():
        return [a["text"] for a in generate_answers(model, tokenizer, ids, settings)]

    # The workload: how long the answers are, and how many run into max_new_tokens.
    lengths = [a["tokens"] for a in generate_answers(model, tokenizer, ids, settings)]
    capped = sum(n >= args.max_new_tokens for n in lengths)
    print(f"answers: {statistics.mean(lengths):.1f} tokens on average (min {min(lengths)}, max {max(lengths)}), "
          f"{capped}/{len(lengths)} cut at max_new_tokens")

    anchors = {"loop": ("model.generate, one prompt at a time", loop),
               "pipeline": ("transformers pipeline (batched)", pipelined)}
    systems = dict(anchors[name] for name in args.anchors.split(","))
    systems["tunesmith generate_answers"] = ours
    if args.plain_head:
        systems["tunesmith, plain fp32 head"] = _plain_head(ours)
    if args.precision == "bf16":
        systems = {name: _autocast_bf16(fn) for name, fn in systems.items()}
    answers, speeds = {}, {name: [] for name in systems}
    for name, fn in systems.items():
        answers[name] = fn()  # warm-up, and the answers compared below
    for _ in range(args.reps):
        for name, fn in systems.items():  # alternate, so drift in machine speed hits all alike
            start = time.perf_counter()
            fn()
            speeds[name].append(len(ids) / (time.perf_counter() - start))
    print(f"{len(ids)} prompts, max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, {args.precision}, "
          f"{torch.get_num_threads()} threads, {args.reps} reps (examples/s min / median / max)")
    ours_median = statistics.median(speeds["tunesmith generate_answers"])
    first = next(iter(systems))
    reference, reference_name = answers[first], first.split(",")[0]  # the first anchor's answers
    for name, values in speeds.items():
        same = sum(a == b for a, b in zip(answers[name], reference))
        median = statistics.median(values)
        print(f"{name:>40}: {min(values):6.2f} / {median:6.2f} / {max(values):6.2f}   "
              f"tunesmith is {ours_median / median:4.2f}x   same answers as {reference_name}: {same}/{len(reference)}")


def _plain_head(fn):
    """``fn`` with the decoder's bf16-screened greedy head switched off."""
    from contextlib import nullcontext

    import tunesmith.eval.decode as decode

    def run():
        screened, decode.screened_greedy_head = decode.screened_greedy_head, lambda model, rows: nullcontext()
        try:
            return fn()
        finally:
            decode.screened_greedy_head = screened

    return run


def _autocast_bf16(fn):
    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    return run


if __name__ == "__main__":
    main()
