"""GGUF export parity on SmolLM2-135M: f16 and q8_0 against the merged model.

Two LoRA runs on builtin:smollm2-135m are exported with ``tunesmith export --to gguf`` at
each quantization: one whose adapter is zero (the merged model is SmolLM2 itself) and one
with a large random adapter (r=16, alpha 128: a strongly perturbed model, logits up to
about 35 where SmolLM2's reach about 27); the export's own gate loads the file
back with transformers and compares logits on the probe batch (the run's probe prompts,
held-out chats and fixed texts). Prints max |diff| of the logits, the logit scale, the
share of positions whose greedy next token agrees, file size and export time; with
llama-cpp-python installed, also how many greedy answers llama.cpp gives as PyTorch does.

Usage: python benchmarks/gguf_parity.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from tunesmith.errors import ModelError
from tunesmith.export import export_run
from tunesmith.jsonl import write_jsonl
from tunesmith.models.load import resolve_model_source
from tunesmith.synthetic import make_lora_run


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        run = make_lora_run(Path(tmp) / "run", resolve_model_source("builtin:smollm2-135m"), "causal_lm", seed=1,
                            system_prompt="You are a helpful AI assistant.", r=16)
        write_jsonl(run / "eval_set.jsonl", [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("What is the capital of France?", "Paris."), ("Name a primary colour.", "Red."),
                         ("How many legs does a spider have?", "Eight."), ("Say hello in Spanish.", "Hola.")]])
        (run / "summary.json").write_text("{}")
        zero = Path(tmp) / "zero"
        shutil.copytree(run, zero)
        adapter = next((zero / "final").glob("*.safetensors"))
        weights = load_file(adapter)
        save_file({k: v.zero_() if "lora_B" in k else v for k, v in weights.items()}, adapter)
        for name, source in (("zero adapter", zero), ("random adapter", run)):
            for quant in ("f16", "q8_0"):
                _export(name, source, Path(tmp) / f"{source.name}-{quant}", quant)


def _export(name: str, run: Path, out: Path, quant: str) -> None:
    try:
        report = export_run(run, "gguf", out, quant=quant)
    except ModelError as error:  # the gate refused: print why
        print(f"{name}, {quant}: refused: {error.problem}")
        return
    check = report["checks"][1]
    print(f"{name}, {quant}: max |diff| {check['max_abs_diff']:.4f} (logit scale {check['logit_scale']:.1f}, "
          f"relative {check['max_abs_diff'] / check['logit_scale']:.4f}, allowed {check['tolerance']:.3f}), "
          f"greedy next token agrees at {check['greedy_next_token_agreement']:.4f} of positions, "
          f"{check['probes']} probes; {report['files'][report['gguf']]} MB; {report['wall_s']} s")
    engine = report["checks"][2]
    if "skipped" in engine:
        print(f"    llama.cpp: skipped ({engine['skipped']})")
    else:
        print(f"    llama.cpp: {engine['same_answers']:.0%} of {engine['probes']} greedy answers equal PyTorch's, "
              f"tokenization equal for {engine['same_tokenization']:.0%}; {engine['examples'][0]}")


if __name__ == "__main__":
    main()
