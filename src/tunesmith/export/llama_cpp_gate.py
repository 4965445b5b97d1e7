"""The second GGUF gate: the file run by llama.cpp itself (optional extra ``llama-cpp-python``).

transformers loading the file back (the first gate) checks the weights and metadata as
transformers reads them; llama.cpp is what Ollama and most users run. When
``llama_cpp`` is importable, the probe prompts (the run's chat-template renderings) are
tokenized by llama.cpp and compared with the training tokenizer's ids, then answered
greedily by llama.cpp and by the merged model in PyTorch from the same ids; the gate
passes when at least ``AGREEMENT[quant]`` of the answers are the same tokens. Without the
package the gate is skipped and ``export.json`` says so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

MAX_NEW_TOKENS = 16
# Share of probe answers whose greedy tokens must equal PyTorch's. Two implementations of
# the same weights round differently, and one flipped near-tie changes the rest of an
# answer, so the bar is below 1 (see the README for the measured agreement).
AGREEMENT = {"f16": 0.75, "q8_0": 0.5}


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def llama_cpp_gate(model, tokenizer, path: Path, prompts: list[str], stops: set[int], quant: str) -> dict:
    """Greedy answers of llama.cpp and of ``model`` to ``prompts`` (rendered chat texts)."""
    if not llama_cpp_available():
        return {"name": "llama.cpp greedy answers = PyTorch's", "skipped": "llama-cpp-python is not installed "
                "(pip install 'tunesmith[llama-cpp]' builds llama.cpp from source)", "passed": True}
    # llama.cpp runs in a child process: native code loaded next to torch crashed a second
    # export in the same process, and a crash there must not take the export down with it.
    request = {"path": str(path), "prompts": prompts, "stops": sorted(stops), "max_new_tokens": MAX_NEW_TOKENS}
    done = subprocess.run([sys.executable, "-m", "tunesmith.export.llama_cpp_gate"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        return {"name": "llama.cpp greedy answers = PyTorch's", "passed": False, "probes": len(prompts),
                "same_answers": 0.0, "required": AGREEMENT[quant],
                "error": f"killed by signal {-done.returncode}" if done.returncode < 0 else
                (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    same_answers = same_tokens = 0
    examples = []
    for text, theirs in zip(prompts, answers):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        same_tokens += theirs["ids"] == ids
        ours = _torch_greedy(model, ids, stops)
        same_answers += theirs["answer"] == ours
        if len(examples) < 3:
            examples.append({"prompt": text[-80:], "pytorch": tokenizer.decode(ours),
                             "llama_cpp": tokenizer.decode(theirs["answer"])})
    share = same_answers / max(1, len(prompts))
    return {"name": "llama.cpp greedy answers = PyTorch's", "probes": len(prompts), "same_answers": share,
            "same_tokenization": same_tokens / max(1, len(prompts)), "required": AGREEMENT[quant],
            "passed": share >= AGREEMENT[quant], "examples": examples}


def _llama_cpp_answers(request: dict) -> list[dict]:
    """In the child: llama.cpp's tokenization of each prompt and its greedy answer to the
    prompt's ids as the training tokenizer gave them (tokenized here by llama.cpp too)."""
    from llama_cpp import Llama

    engine = Llama(model_path=request["path"], n_ctx=2048, verbose=False, logits_all=False, seed=0)
    stops, results = set(request["stops"]), []
    for text in request["prompts"]:
        ids = engine.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        answer = []
        for token in engine.generate(ids, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
            if token in stops or len(answer) >= request["max_new_tokens"]:
                break
            answer.append(token)
        results.append({"ids": ids, "answer": answer})
    return results


@torch.no_grad()
def _torch_greedy(model, ids: list[int], stops: set[int]) -> list[int]:
    x = torch.tensor([ids])
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=MAX_NEW_TOKENS,
                         do_sample=False, eos_token_id=sorted(stops), pad_token_id=stops and min(stops))
    new = out[0, len(ids):].tolist()
    return new[: next((k for k, t in enumerate(new) if t in stops), len(new))]


if __name__ == "__main__":
    print(json.dumps(_llama_cpp_answers(json.loads(sys.stdin.read()))))
