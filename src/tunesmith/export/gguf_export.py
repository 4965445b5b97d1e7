"""``export --to gguf``: a Llama-family causal LM as one GGUF file, with a parity gate.

The run is merged first (the merge gate of ``export --to merged`` runs too), then written
with the ``gguf`` package's writer, in llama.cpp's layout: its tensor names, the rotary
permutation of the q/k projections llama.cpp expects, f16 or q8_0 matrices (norms stay
f32, as llama.cpp's converter keeps them), and the tokenizer (tokens, token types, merges,
special ids) with its chat template. Before anything is kept, the file is loaded back
with transformers (``gguf_file=``, which dequantizes) and its logits are compared with the
merged model's on the probe batch. An Ollama ``Modelfile`` is written beside it
(:mod:`tunesmith.export.modelfile`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tunesmith.data.template_check import PROBE_CHATS, check_template
from tunesmith.errors import ConfigError, ModelError
from tunesmith.eval.decode import end_ids
from tunesmith.export.llama_cpp_gate import llama_cpp_gate
from tunesmith.export.merge import logits_of, merged_model
from tunesmith.export.probes import max_abs_diff, probe_batch, probe_texts

QUANTS = ("f16", "q8_0")
# Parity tolerance on the logits, relative to the logit scale max(1, max |logit|):
# f16 rounds each weight to 11 significant bits; q8_0 stores blocks of 32 weights as
# int8 with one f16 scale (measured on SmolLM2-135M: see the README).
TOLERANCE = {"f16": 2e-2, "q8_0": 1e-1}
ARCHITECTURES = {"LlamaForCausalLM": "llama"}

# llama.cpp's token types
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5


def export_gguf(final_dir: Path, run_dir: Path | None, out: Path, quant: str = "f16") -> dict:
    """Merge the run, write ``model-<quant>.gguf`` and a ``Modelfile`` to ``out``, and check
    the file's logits against the merged model's; returns the checks and metadata."""
    from transformers import AutoTokenizer

    from tunesmith.export.modelfile import write_modelfile

    if quant not in QUANTS:
        raise ConfigError(f"Unknown GGUF quantization '{quant}'.", f"Use one of: {', '.join(QUANTS)}.")
    model, tokenizer, meta, merge_check = merged_model(final_dir, run_dir)
    if meta["task"] != "causal_lm" or type(model).__name__ not in ARCHITECTURES:
        raise ConfigError(
            f"GGUF export covers Llama-family causal language models; this run is a {meta['task']} "
            f"{type(model).__name__}.",
            "Export it with --to merged or --to onnx instead.",
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"model-{quant}.gguf"
    write_gguf(model, tokenizer, path, quant, name=Path(meta.get("run_name") or final_dir.parent.name).name)
    texts = probe_texts(meta, tokenizer, run_dir)
    check = gguf_parity(model, path, probe_batch(tokenizer, texts, "causal_lm", meta.get("max_length") or 512), quant)
    if not check["passed"]:
        _refuse(path, f"The GGUF file's logits differ from the merged model's by {check['max_abs_diff']:.3g} "
                f"(allowed {check['tolerance']:.3g}) on {check['probes']} probes, so it was not kept.")
    try:  # the file's own tokenizer and template, as transformers rebuilds them, render like training
        checked = check_template(final_dir, AutoTokenizer.from_pretrained(str(out), gguf_file=path.name),
                                 "the GGUF file")
    except ModelError:
        path.unlink()
        raise
    engine_check = llama_cpp_gate(model, tokenizer, path, answer_prompts(meta, tokenizer, run_dir),
                                  end_ids(model, tokenizer), quant)
    if not engine_check["passed"]:
        _refuse(path, f"llama.cpp could not run the file ({engine_check['error']}), so it was not kept."
                if "error" in engine_check else
                f"llama.cpp's greedy answers equal PyTorch's for {engine_check['same_answers']:.0%} of "
                f"{engine_check['probes']} probes (at least {engine_check['required']:.0%} required), so the file "
                "was not kept.")
    modelfile = write_modelfile(out, path.name, tokenizer, meta)
    return {"checks": [merge_check, check, engine_check], "quant": quant, "gguf": path.name, "ollama": modelfile,
            "template_probes_checked": checked}


def answer_prompts(meta: dict, tokenizer, run_dir: Path | None, limit: int = 12) -> list[str]:
    """Prompts to answer, rendered as the server renders them: the template probe chats,
    then the run's held-out conversations up to their last answer."""
    from tunesmith.data.template import render_prompt, with_system_prompt
    from tunesmith.rundir import RunDir

    chats = list(PROBE_CHATS)
    rows = RunDir(run_dir).eval_rows() if run_dir is not None else []
    chats += [r["messages"][:-1] for r in rows if r.get("messages") and r["messages"][-1]["role"] == "assistant"]
    return [render_prompt(tokenizer, with_system_prompt(chat, meta.get("system_prompt"))) for chat in chats[:limit]]


def _refuse(path: Path, problem: str) -> None:
    path.unlink()
    raise ModelError(problem, "Try --quant f16, and report this run (tunesmith.json) as a bug.")


def write_gguf(model, tokenizer, path: Path, quant: str = "f16", name: str = "model") -> None:
    """Write ``model`` (a Llama-family causal LM) and ``tokenizer`` to ``path``."""
    import gguf

    config = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(float(_rope_theta(config)))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_rope_dimension_count(head_dim)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if quant == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    state = model.state_dict()
    tied = getattr(config, "tie_word_embeddings", False)
    for key, tensor in state.items():
        if tied and key == "lm_head.weight":
            continue  # llama.cpp reuses token_embd when output.weight is absent
        target = names.get_name(key, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ModelError(f"No GGUF name for the tensor '{key}'.", "Export it with --to merged instead.")
        data = tensor.detach().float().numpy()
        if target.endswith("attn_q.weight"):
            data = _permute(data, config.num_attention_heads, config.num_attention_heads)
        elif target.endswith("attn_k.weight"):
            data = _permute(data, config.num_attention_heads, config.num_key_value_heads)
        _add_tensor(writer, target, data, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _rope_theta(config) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return parameters.get("rope_theta") or getattr(config, "rope_theta", 10000.0)


def _permute(weights: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """llama.cpp's order of the rotary halves (the inverse of transformers' reverse permute)."""
    if kv_heads != heads:
        heads = kv_heads
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _add_tensor(writer, name: str, data: np.ndarray, quant: str) -> None:
    import gguf

    if data.ndim < 2:  # norms: f32, as llama.cpp's converter keeps them
        writer.add_tensor(name, data.astype(np.float32))
    elif quant == "q8_0" and data.shape[-1] % 32 == 0:
        kind = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
    else:
        writer.add_tensor(name, data.astype(np.float16))


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """Byte-level BPE tokenizers (SmolLM2, Llama 3, Qwen 2, GPT-2 style)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model = json.loads(backend.to_str())["model"] if backend is not None else {}
    if model.get("type") != "BPE":
        raise ConfigError("GGUF export covers byte-level BPE tokenizers; this one is "
                          f"{model.get('type') or type(tokenizer).__name__}.", "Export it with --to merged instead.")
    vocab = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocab.items()}
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(UNUSED)
        else:
            tokens.append(token)
            types.append(NORMAL if token not in added else CONTROL if added[token] else USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre_tokenizer_name(backend))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    merges = model.get("merges") or []
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for kind in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{kind}_token_id", None)
        if token_id is not None:
            getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(False)  # the chat template writes any BOS itself, as in training
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def pre_tokenizer_name(backend) -> str:
    """llama.cpp's name for how the tokenizer splits text before BPE (``tokenizer.ggml.pre``):
    GPT-2's split ("gpt-2", as llama.cpp spells it), SmolLM's (digits one by one), or Llama 3's / Qwen 2's regular expressions.
    Anything else is written as "default"."""
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    spec = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    parts = spec.get("pretokenizers", [spec]) if spec.get("type") == "Sequence" else [spec]
    kinds = [part.get("type") for part in parts]
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    if kinds and kinds[0] == "Split":
        pattern = parts[0].get("pattern", {}).get("Regex")
        for name in ("llama-bpe", "qwen2"):
            if pattern == GGUF_PRE_TOKENIZER_SPLITS[name]:
                return name
    return "default"


def gguf_parity(model, path: Path, batch: dict, quant: str) -> dict:
    """Logits of the GGUF file, loaded back by transformers, against ``model``'s."""
    from transformers import AutoModelForCausalLM

    reference = logits_of(model, batch)
    loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()
    after = logits_of(loaded, batch)
    diff = max_abs_diff(reference, after, batch["attention_mask"])
    scale = max(1.0, float(reference.abs().max()))
    tolerance = TOLERANCE[quant] * scale
    return {"name": f"GGUF ({quant}) logits, loaded back by transformers = merged logits",
            "probes": int(batch["input_ids"].shape[0]), "max_abs_diff": diff, "logit_scale": scale,
            "tolerance": tolerance, "passed": diff <= tolerance,
            "greedy_next_token_agreement": float((reference.argmax(-1) == after.argmax(-1))[
                batch["attention_mask"].bool()].float().mean())}
