"""GRPO, side by side: TRL's GRPOTrainer (the anchor) vs Tunesmith's ``task: grpo``.

Data: the 64 review prompts of the positive-reviews demo (16 genres x 4 phrasings,
``src/tunesmith/recipes/positive-reviews/prompts.jsonl``), conversational, shuffled with
seed 42: the first ``--train`` prompts train, the next ``--eval`` are held out. Model
builtin:smollm2-135m + LoRA (r=16, alpha=32, dropout 0 on q/k/v/o). Both: 8 answers per
prompt, 2 prompts per step (16 answers), answers of at most 32 tokens sampled at
temperature 1.0, no KL term (beta 0, TRL's default), advantages normalised by the group's
standard deviation, TRL's default "dapo" loss aggregation, one update per sample, lr 3e-4
(constant, no warmup), bf16 autocast (TRL's CPU default). The reward, the same rule in
both: 1 when the answer holds one of "great", "excellent", "brilliant", "wonderful",
"masterpiece" (a regex), else 0.

Reported per run: answers/s over training (sampling and updates together: every answer
sampled during training, per training second), peak RSS, the mean sampled reward of the
first and of the last quarter of the steps (from each system's own log), and the held-out
mean reward: 8 sampled answers (seed 0) to each held-out prompt from the trained adapter,
one function for both. A GRPO batch's loss depends on the answers each trainer samples,
so the formula check, run first, hands both the same sampled answers: one batch, a random
adapter, a KL term (kl_beta 0.04); it compares the loss and the LoRA gradients of each
(``first_batch_check``).

Usage:
  python benchmarks/bench_grpo.py [--reps 2] [--train 32] [--eval 16]
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

STARTED = time.perf_counter()
sys.path.insert(0, str(Path(__file__).parent))
import harness  # noqa: E402
from bench_preference import MODEL, TARGETS, read  # noqa: E402

HYPER = {"r": 16, "alpha": 32, "dropout": 0.0, "num_generations": 8, "prompts_per_step": 2, "max_new_tokens": 32,
         "temperature": 1.0, "lr": 3e-4, "seed": 42}
PATTERN = r"(?i)\b(great|excellent|brilliant|wonderful|masterpiece)\b"
PROMPTS = Path(__file__).resolve().parents[1] / "src" / "tunesmith" / "recipes" / "positive-reviews" / "prompts.jsonl"
KEYS = ["answers_per_s", "train_s", "wall_s", "peak_rss_mb", "reward_first", "reward_last", "held_out_reward"]


def prepare(data_dir: Path, n_train: int, n_eval: int) -> None:
    """train.jsonl / eval.jsonl: conversational prompts (TRL's ``prompt`` column) split once."""
    from tunesmith.jsonl import write_jsonl

    rows = [{"prompt": r["messages"]} for r in read(PROMPTS)]
    if n_train + n_eval > len(rows):
        raise SystemExit(f"--train {n_train} + --eval {n_eval} is more than the {len(rows)} prompts of {PROMPTS.name}")
    random.Random(HYPER["seed"]).shuffle(rows)
    write_jsonl(data_dir / "train.jsonl", rows[:n_train])
    write_jsonl(data_dir / "eval.jsonl", rows[n_train : n_train + n_eval])


def reward(text: str) -> float:
    return 1.0 if re.search(PATTERN, text) else 0.0


def _steps(data_dir: Path) -> int:
    return len(read(data_dir / "train.jsonl")) // HYPER["prompts_per_step"]


def held_out(final_dir: Path, data_dir: Path) -> float:
    """Mean reward of 8 sampled answers (seed 0) to each held-out prompt (one function for both)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.eval.decode import DecodeSettings, generate_answers
    from tunesmith.models.load import resolve_model_source

    source = resolve_model_source(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(source), final_dir)
    prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=True, return_dict=True)[
        "input_ids"] for r in read(data_dir / "eval.jsonl") for _ in range(HYPER["num_generations"])]
    settings = DecodeSettings(max_new_tokens=HYPER["max_new_tokens"], temperature=HYPER["temperature"], seed=0,
                              batch_size=32)
    answers = generate_answers(model, tokenizer, prompts, settings)
    return sum(reward(a["text"]) for a in answers) / len(answers)


def _result(data_dir: Path, train_s: float, rewards: list[float], final_dir: Path) -> dict:
    """A worker's numbers: answers sampled per training second, the logged mean reward of
    the first and last quarter of the steps, the held-out reward of the trained adapter."""
    quarter = max(1, len(rewards) // 4)
    answers = _steps(data_dir) * HYPER["num_generations"] * HYPER["prompts_per_step"]
    result = harness.training_result(answers, train_s, STARTED, {
        "reward_first": sum(rewards[:quarter]) / quarter, "reward_last": sum(rewards[-quarter:]) / quarter,
        "held_out_reward": held_out(final_dir, data_dir)})
    result["answers_per_s"] = result.pop("tokens_per_s")
    return result


def worker_trl(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    """TRL's GRPOTrainer with a PEFT LoraConfig and the rule as a reward function."""
    import yaml
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.models.load import resolve_model_source

    def rule(completions, **_):
        return [reward(c[-1]["content"] if isinstance(c, list) else c) for c in completions]

    set_seed(HYPER["seed"])
    source = resolve_model_source(MODEL)
    extra = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in overrides)}
    args = GRPOConfig(output_dir=str(out_dir), per_device_train_batch_size=HYPER["num_generations"] * HYPER[
        "prompts_per_step"], num_generations=HYPER["num_generations"], max_completion_length=HYPER["max_new_tokens"],
        temperature=HYPER["temperature"], learning_rate=HYPER["lr"], lr_scheduler_type="constant",
        max_steps=_steps(data_dir), num_train_epochs=1, seed=HYPER["seed"], report_to="none", save_strategy="no",
        logging_steps=1, use_cpu=True, disable_tqdm=True, **extra)
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(source), reward_funcs=rule, args=args,
                          train_dataset=Dataset.from_list(read(data_dir / "train.jsonl")),
                          processing_class=AutoTokenizer.from_pretrained(source), peft_config=_lora())
    result = trainer.train()
    trainer.save_model(str(out_dir / "final"))
    rewards = [entry["reward"] for entry in trainer.state.log_history if "reward" in entry]
    return _result(data_dir, result.metrics["train_runtime"], rewards, out_dir / "final")


def recipe(data_dir: Path) -> dict:
    from tunesmith.jsonl import write_jsonl

    for split in ("train", "eval"):  # Tunesmith reads prompts as chat rows
        write_jsonl(data_dir / f"{split}-chat.jsonl", [{"messages": r["prompt"]} for r in read(data_dir / f"{split}.jsonl")])
    return {
        "name": "bench-grpo", "task": "grpo", "seed": HYPER["seed"], "model": {"name": MODEL},
        "data": {"train": str(data_dir / "train-chat.jsonl"), "eval": str(data_dir / "eval-chat.jsonl"),
                 "max_length": 96, "cache": False},
        "method": {"type": "lora", "r": HYPER["r"], "alpha": HYPER["alpha"], "dropout": HYPER["dropout"],
                   "target_modules": TARGETS},
        "train": {"epochs": 1, "batch_size": HYPER["prompts_per_step"], "lr": HYPER["lr"], "warmup_ratio": 0.0,
                  "scheduler": "constant", "precision": "bf16", "log_every": 1, "save_every": 1000},
        "grpo": {"num_generations": HYPER["num_generations"], "max_new_tokens": HYPER["max_new_tokens"],
                 "temperature": HYPER["temperature"], "rewards": [{"type": "regex", "pattern": PATTERN}]},
        "eval": {"probes": []},
    }


def worker_tunesmith(data_dir: Path, out_dir: Path, overrides: list[str]) -> dict:
    train_s, final = harness.train_with_tunesmith(recipe(data_dir), overrides, out_dir)
    logged = [json.loads(line) for line in (final.parent / "metrics.jsonl").read_text().splitlines()]
    return _result(data_dir, train_s, [r["reward"] for r in logged], final)


def first_batch_check(data_dir: Path, kl_beta: float = 0.04) -> dict:
    """The GRPO loss of one batch of sampled answers on the same random-adapter model, TRL
    vs Tunesmith, with a KL term (so the value depends on the policy's and the reference's
    log-probs), and the relative difference of the two LoRA gradients. The answers are sampled once by Tunesmith and handed to both: TRL's
    ``compute_loss`` on the padded rows (reference log-probs from its own log-prob function
    with the adapter off), Tunesmith's loss on its shared-prompt rows, each divided by the
    answer tokens ("dapo")."""
    import torch
    from datasets import Dataset
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.config.schema import GrpoConfig
    from tunesmith.models.load import resolve_model_source
    from tunesmith.objectives.grpo import GrpoObjective

    source = resolve_model_source(MODEL)
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(source), _lora())
    harness.randomize_lora_b(model)
    model.eval()
    # A graded reward (answer length) so that every group has advantages that are not all zero.
    settings = GrpoConfig(num_generations=HYPER["num_generations"], max_new_tokens=HYPER["max_new_tokens"],
                          temperature=HYPER["temperature"], kl_beta=kl_beta,
                          rewards=[{"type": "length", "min_words": 8, "max_words": 12}])
    objective = GrpoObjective(tokenizer, 96, settings)  # padded rows first: TRL's layout
    rows = [{"messages": r["prompt"]} for r in read(data_dir / "train.jsonl")[: HYPER["prompts_per_step"]]]
    batch = objective.collate(objective.encode(rows))
    padded = objective.rollout(model, batch)
    shared = {**objective.shared_prompt_rows(batch, padded, HYPER["num_generations"]),
              "advantages": padded["advantages"], "num_examples": padded["num_examples"]}

    def gradients(loss) -> torch.Tensor:
        model.zero_grad()
        loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    mine = objective.loss_sum(model, shared) / objective.count_targets(shared)
    mine_grad = gradients(mine)
    width = batch["input_ids"].shape[1]
    args = GRPOConfig(output_dir=str(data_dir / "trl-check"), per_device_train_batch_size=HYPER["num_generations"],
                      num_generations=HYPER["num_generations"], max_completion_length=HYPER["max_new_tokens"],
                      temperature=HYPER["temperature"], beta=kl_beta, report_to="none", use_cpu=True,
                      # fp32 in both (TRL's log-probs run under the accelerator's autocast), and the
                      # plain k3 KL gradient: TRL's default bias correction multiplies the KL by the
                      # ratio, which is 1 in value but adds KL x grad(log-prob) to the gradient.
                      bf16=False, use_bias_correction_kl=False)
    trainer = GRPOTrainer(model=model, reward_funcs=lambda completions, **_: [0.0] * len(completions), args=args,
                          train_dataset=Dataset.from_list(read(data_dir / "train.jsonl")), processing_class=tokenizer)
    completion_ids, completion_mask = padded["input_ids"][:, width:], padded["answer_mask"][:, width:]
    inputs = {"prompt_ids": padded["input_ids"][:, :width], "prompt_mask": padded["attention_mask"][:, :width],
              "completion_ids": completion_ids, "completion_mask": completion_mask,
              "advantages": padded["advantages"], "num_items_in_batch": completion_mask.sum()}
    with torch.no_grad(), trainer.model.disable_adapter():
        inputs["ref_per_token_logps"] = trainer._get_per_token_logps_and_entropies(
            trainer.model, padded["input_ids"], padded["attention_mask"], completion_ids.size(1))[0]
    anchor = trainer.compute_loss(trainer.model.eval(), inputs)
    anchor_grad = gradients(anchor)
    mine, anchor = float(mine.detach()), float(anchor.detach())
    return {"tunesmith": mine, "trl": anchor, "abs_diff": abs(mine - anchor),
            "grad_rel_diff": float((mine_grad - anchor_grad).norm() / anchor_grad.norm())}


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=HYPER["r"], lora_alpha=HYPER["alpha"], lora_dropout=HYPER["dropout"], target_modules=TARGETS,
                      task_type="CAUSAL_LM")


def main() -> None:
    if "--worker" not in sys.argv:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            prepare(Path(tmp), HYPER["prompts_per_step"], 1)
            row = first_batch_check(Path(tmp))
        verdict = "same" if row["abs_diff"] < 1e-4 and row["grad_rel_diff"] < 1e-3 else "DIFFERENT"
        print(f"first-batch GRPO loss (kl_beta 0.04), same sampled answers and random adapter: tunesmith "
              f"{row['tunesmith']:.6f}  trl {row['trl']:.6f}  |diff| {row['abs_diff']:.2e}  LoRA gradients differ by "
              f"{row['grad_rel_diff']:.1e} of their norm  {verdict}", flush=True)
    harness.side_by_side(__file__, __doc__, "trl", {"trl": worker_trl, "tunesmith": worker_tunesmith}, prepare,
                         KEYS, HYPER, train_rows=32, eval_rows=16)


if __name__ == "__main__":
    main()
