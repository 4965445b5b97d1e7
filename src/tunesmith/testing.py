"""Helpers for tests and benchmarks that drive the real CLI: tiny models and a tiny recipe
writer, start/finish/kill a ``tunesmith train`` subprocess, count metrics lines, wait for N lines.

The tests' fixtures (``tests/conftest.py``), the crash-safety test
(``tests/integration/test_kill_resume.py``) and ``benchmarks/kill_resume_trials.py`` use
these, so what the benchmark measures is the setup the tests check. Importing this module
imports neither torch nor transformers: the model writers import them when called.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tunesmith.jsonl import write_jsonl
from tunesmith.synthetic import chat_rows, preference_rows, sentiment_rows

TIMEOUT = 300  # seconds a CLI subprocess may take before a helper gives up on it

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# ----------------------------------------------------------------------------- tiny models


def base_tokenizer():
    """The packaged MiniLM tokenizer: real tokenization without a download."""
    from transformers import AutoTokenizer

    from tunesmith.models.load import resolve_model_source

    return AutoTokenizer.from_pretrained(resolve_model_source("builtin:minilm"))


def write_tiny_bert(folder: Path) -> Path:
    """Save a 2-layer, hidden-32 BERT (seed 0, dropout 0.1) and its tokenizer to ``folder``.

    The base model for classification; small enough to train in seconds on a CPU.
    """
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tokenizer = base_tokenizer()
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=128,
                        # A larger init spread gives the random encoder token-dependent features,
                        # so frozen-base methods (LoRA, freeze) have a signal to learn from.
                        initializer_range=0.2)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


def write_tiny_llama(folder: Path) -> Path:
    """Save a 2-layer, hidden-32 Llama (seed 0) with a ChatML template to ``folder``.

    The base model for chat SFT.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tokenizer = base_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True,
                         # Embeddings wide enough that a frozen tied LM head can separate tokens.
                         initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return Path(folder)


# ----------------------------------------------------------------------------- tiny recipes


def write_cls_recipe(folder: Path, model_dir: Path, train_rows: int = 160) -> Path:
    """A classification recipe on ``model_dir`` and synthetic sentiment data, in ``folder``.

    Writes ``train.jsonl`` (``train_rows`` rows), ``eval.jsonl`` (40 rows) and
    ``recipe.yaml``, whose runs go to ``folder/runs``; returns the recipe's path.
    """
    folder = Path(folder)
    write_jsonl(folder / "train.jsonl", sentiment_rows(train_rows, seed=1))
    write_jsonl(folder / "eval.jsonl", sentiment_rows(40, seed=2))
    recipe = _recipe(folder, model_dir, "tiny-cls", "classification",
                     data={"train": "train.jsonl", "eval": "eval.jsonl", "max_length": 32},
                     method={"type": "full"},
                     train={"epochs": 15, "batch_size": 16, "lr": 5e-3, "eval_every": 10, "log_every": 2,
                            "save_every": 20},
                     eval={"probes": ["the film was wonderful", "the plot was awful"]})
    return _write_yaml(folder / "recipe.yaml", recipe)


def write_chat_recipe(folder: Path, model_dir: Path) -> Path:
    """A chat-SFT (LoRA) recipe on ``model_dir`` and 60 synthetic identity chats, in ``folder``.

    Writes ``chats.jsonl`` and ``chat.yaml``, whose runs go to ``folder/runs``; returns the
    recipe's path.
    """
    folder = Path(folder)
    write_jsonl(folder / "chats.jsonl", chat_rows(60))
    recipe = _recipe(folder, model_dir, "tiny-chat", "causal_lm",
                     data={"train": "chats.jsonl", "eval_size": 10, "max_length": 64, "system_prompt": "be brief."},
                     method={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                     train={"epochs": 6, "batch_size": 8, "lr": 2e-2, "log_every": 2},
                     eval={"probes": ["who are you?"], "max_new_tokens": 8})
    return _write_yaml(folder / "chat.yaml", recipe)


def write_reward_recipe(folder: Path, model_dir: Path) -> Path:
    """A reward-model (LoRA) recipe on ``model_dir`` and synthetic preference pairs, in ``folder``.

    Writes ``pairs.jsonl`` (120 train pairs), ``pairs_eval.jsonl`` (40) and ``reward.yaml``,
    whose runs go to ``folder/runs``; returns the recipe's path.
    """
    folder = Path(folder)
    write_jsonl(folder / "pairs.jsonl", preference_rows(120, seed=1))
    write_jsonl(folder / "pairs_eval.jsonl", preference_rows(40, seed=2))
    recipe = _recipe(folder, model_dir, "tiny-reward", "reward",
                     data={"train": "pairs.jsonl", "eval": "pairs_eval.jsonl", "max_length": 48},
                     method={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                     train={"epochs": 8, "batch_size": 8, "lr": 1e-2, "log_every": 2, "save_every": 20},
                     eval={"probes": ["the film was wonderful", "the plot was awful"]})
    return _write_yaml(folder / "reward.yaml", recipe)


def write_preference_recipe(folder: Path, model_dir: Path, loss: str = "dpo", **preference) -> Path:
    """A preference-tuning (LoRA) recipe on ``model_dir`` and the synthetic pairs of
    :func:`write_reward_recipe`, in ``folder``: ``preference.loss: loss`` plus ``preference``
    settings. Returns the recipe's path (``<loss>.yaml``)."""
    folder = Path(folder)
    write_jsonl(folder / "pairs.jsonl", preference_rows(120, seed=1))
    write_jsonl(folder / "pairs_eval.jsonl", preference_rows(40, seed=2))
    recipe = _recipe(folder, model_dir, f"tiny-{loss}", "preference",
                     data={"train": "pairs.jsonl", "eval": "pairs_eval.jsonl", "max_length": 48},
                     method={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                     train={"epochs": 4, "batch_size": 8, "lr": 5e-3, "log_every": 2, "save_every": 20},
                     preference={"loss": loss, **preference})
    return _write_yaml(folder / f"{loss}.yaml", recipe)


GRPO_QUESTIONS = ["how was the film?", "tell me about the movie.", "what did you think?", "review the film.",
                  "your verdict?", "describe the plot.", "was it good?", "rate the acting."]


def write_grpo_recipe(folder: Path, model_dir: Path, pattern: str = "[0-9]") -> Path:
    """A GRPO (LoRA, 20 steps) recipe on ``model_dir`` whose rule reward is "the answer
    matches ``pattern``", with 48 short prompts in ``folder/prompts.jsonl``. Returns the
    recipe's path (``grpo.yaml``)."""
    folder = Path(folder)
    write_jsonl(folder / "prompts.jsonl", [{"messages": [{"role": "user", "content": f"{GRPO_QUESTIONS[i % 8]} ({i})"}]}
                                           for i in range(48)])
    recipe = _recipe(folder, model_dir, "tiny-grpo", "grpo",
                     data={"train": "prompts.jsonl", "eval_size": 8, "max_length": 32},
                     method={"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
                     train={"epochs": 2, "batch_size": 4, "lr": 2e-2, "log_every": 2, "save_every": 50,
                            "warmup_ratio": 0.0},
                     grpo={"num_generations": 8, "max_new_tokens": 6, "temperature": 0.5,
                           "rewards": [{"type": "regex", "pattern": pattern}]})
    return _write_yaml(folder / "grpo.yaml", recipe)


def write_long_rows(path: Path, rows: int = 64, words: int = 400) -> Path:
    """Rows of ``words`` random common words (longer than any max_length a memory test plans),
    labelled "yes"/"no" in turn, so every micro-batch is the longest one the plan assumes."""
    rng = random.Random(0)
    vocabulary = ("the a of to and in is it that was for on are with as his they be at one have this from or "
                  "had by word but what some we can out other were all there when up use your how said an each "
                  "she which do their time if will way about many then them write would like so these her long "
                  "make thing see him two has look more day could go come did number sound no most people my "
                  "over know water than call first who may down side been now find").split()
    write_jsonl(path, [{"text": " ".join(rng.choice(vocabulary) for _ in range(words)), "label": "yes" if i % 2 else "no"}
                       for i in range(rows)])
    return Path(path)


def measured_peak_and_step(recipe: Path) -> dict:
    """Train ``recipe`` in a fresh process: its peak resident memory above the baseline (MB,
    from summary.json) and its median step time from the second step on (s, None with one step).

    The step time assumes every micro-batch row is full (``max_length`` tokens: rows longer
    than that, truncated or packed) and reads it off each logged step's tokens/s (examples/s
    would count the documents of a packed row, not its rows); ``train.log_every`` must be 1."""
    from tunesmith.rundir import RunDir

    subprocess.run([sys.executable, "-m", "tunesmith", "train", str(recipe), "--overwrite", "--quiet"],
                   check=True, capture_output=True, timeout=TIMEOUT)
    data = yaml.safe_load(Path(recipe).read_text())
    run = RunDir(Path(data["output_dir"]) / data["name"])
    return peak_and_step_of(run, data["train"]["batch_size"] * data["train"].get("grad_accum", 1)
                            * data["data"]["max_length"])


def peak_and_step_of(run, tokens_per_step: int) -> dict:
    """A finished run's peak above its baseline (MB: on a GPU ``max_memory_allocated``, whose
    allocator starts empty; else resident memory) and median step time from the second step."""
    import statistics

    train = run.read_summary()["train"]
    step_s = [tokens_per_step / s["tokens_per_s"] for s in run.log("metrics") if "tokens_per_s" in s][1:]
    peak = train.get("peak_gpu_mb") or train["peak_rss_mb"] - train["baseline_rss_mb"]
    return {"peak_mb": peak, "step_s": statistics.median(step_s) if step_s else None}


def _recipe(folder: Path, model_dir: Path, name: str, task: str, **sections) -> dict:
    """A recipe dict whose runs go to ``folder/runs`` (seed 7, the tiny model in ``model_dir``)."""
    return {"name": name, "task": task, "seed": 7, "output_dir": str(folder / "runs"),
            "model": {"name": str(model_dir)}, **sections}


def _write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- train subprocesses


def start_train(recipe: Path, run_dir: Path, *args: str) -> subprocess.Popen:
    """Start ``python -m tunesmith.cli train RECIPE --output-dir RUN_DIR ARGS`` in the background.

    Its output is appended to ``RUN_DIR.log`` (see ``run_log``); ``finish`` or ``kill``
    closes that file. The working directory is the recipe's folder, which holds no Python
    files, so nothing there can shadow a module.
    """
    log = open(f"{run_dir}.log", "ab")  # noqa: SIM115 - closed by finish()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunesmith.cli", "train", str(recipe), "--output-dir", str(run_dir), *args],
        cwd=Path(recipe).parent, env={**os.environ, "TUNESMITH_NO_PROGRESS": "1"},
        stdout=log, stderr=subprocess.STDOUT,
    )
    proc.log = log
    return proc


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> int:
    """Wait for a ``start_train`` process and return its exit code (negative: killed by
    that signal). Past ``timeout`` it is killed (and ``TimeoutExpired`` raised)."""
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.log.close()


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = TIMEOUT) -> int:
    """Send ``sig`` to a ``start_train`` process, wait for it to end; its exit code.

    SIGKILL gives ``-9`` (or 0 if the run had already finished); SIGINT/SIGTERM let the run
    save a checkpoint and exit 130.
    """
    proc.send_signal(sig)
    return finish(proc, timeout)


def run_log(run_dir: Path) -> str:
    """Everything the ``start_train`` processes of ``run_dir`` printed so far."""
    return Path(f"{run_dir}.log").read_text(errors="replace")


def metric_lines(run_dir: Path) -> int:
    """Complete lines in ``run_dir/metrics.jsonl`` right now (the run may be writing it)."""
    try:
        return (Path(run_dir) / "metrics.jsonl").read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(proc: subprocess.Popen, run_dir: Path, n: int, timeout: float = TIMEOUT) -> float | None:
    """Poll until metrics.jsonl has ``n`` lines; the monotonic time it happened, or None if
    the process ended first or ``timeout`` seconds passed (``proc.poll()`` tells which)."""
    deadline = time.monotonic() + timeout
    while metric_lines(run_dir) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            return None
        # Fine-grained: the kill trials time their kills relative to these moments.
        time.sleep(0.005)
    return time.monotonic()


def wait_until(predicate, timeout: float, what: str = "condition", poll: float = 0.05):
    """Poll ``predicate()`` until it returns something truthy and return that.

    Raises:
        AssertionError: ``timeout`` seconds passed first (naming ``what``).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")

