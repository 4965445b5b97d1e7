"""``export --to onnx``: the model as an ONNX graph, checked against PyTorch with onnxruntime.

The graph takes ``input_ids`` and ``attention_mask`` (batch and sequence length dynamic)
and returns ``logits``: class scores for classifiers, next-token scores at every position
for causal LMs (no KV cache: for scoring and simple decoding; serve with ``tunesmith serve``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch import nn

from tunesmith.config.methods import method_info
from tunesmith.errors import ConfigError, ModelError
from tunesmith.export.merge import logits_of, merged_model
from tunesmith.export.probes import max_abs_diff, probe_batch, probe_texts
from tunesmith.methods.saved import load_trained
from tunesmith.rundir import read_model_meta, write_model_meta

ONNX_TOLERANCE = 1e-4  # relative to the logit scale, max(1, max |logit|)
ONNX_FILE = "model.onnx"


class LogitsOnly(nn.Module):
    """The traced function: token ids and mask in, logits out (no cache, no dict outputs)."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask):
        if self.task == "causal_lm":
            return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


class OnnxModel:
    """An onnxruntime session that quacks like a transformers model (``model(...).logits``),
    so the training objectives can evaluate it unchanged."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def eval(self):
        return self

    def __call__(self, input_ids, attention_mask, **_):
        feeds = {"input_ids": np.asarray(input_ids, dtype=np.int64), "attention_mask": np.asarray(attention_mask, dtype=np.int64)}
        return SimpleNamespace(logits=torch.from_numpy(self.session.run(["logits"], feeds)[0]))


def exportable_model(final_dir: Path, run_dir: Path | None):
    """The plain PyTorch model an export starts from: merged when the method merges.

    Returns ``(model, tokenizer, meta, checks)``.

    Raises:
        ConfigError: prompt/prefix methods, whose virtual tokens live outside the weights.
    """
    meta = read_model_meta(final_dir)
    if method_info(meta["method"]).mergeable:
        model, tokenizer, meta, check = merged_model(final_dir, run_dir)
        return model, tokenizer, meta, [check]
    if method_info(meta["method"]).family == "own":  # bottleneck adapters are ordinary modules inside the model
        model, tokenizer, meta = load_trained(final_dir)
        return model, tokenizer, meta, []
    raise ConfigError(
        f"A model trained with method '{meta['method']}' cannot be exported to ONNX: its virtual tokens are "
        "added by PEFT outside the model's weights.",
        "Serve it with 'tunesmith serve', or train with LoRA/IA3/full fine-tuning for an ONNX export.",
    )


def write_onnx(model: nn.Module, task: str, example: dict[str, torch.Tensor], path: Path) -> None:
    """Trace ``model`` with torch.export and save it as one ONNX file (opset 18)."""
    wrapper = LogitsOnly(model, task).eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("sequence")
    shapes = ({0: batch, 1: seq}, {0: batch, 1: seq})
    # The exporter is chatty (progress lines, deprecation notes); errors still raise.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        try:
            program = torch.onnx.export(wrapper, (example["input_ids"], example["attention_mask"]),
                                        input_names=["input_ids", "attention_mask"], output_names=["logits"],
                                        dynamic_shapes=shapes, dynamo=True, verbose=False, opset_version=18)
        except Exception as exc:  # the exporter raises many types; all mean "this model does not trace"
            raise ModelError(f"ONNX export failed: {type(exc).__name__}: {str(exc)[:500]}",
                             "Run with --debug for the exporter's traceback.") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=_parameter_bytes(model) > 1.5 * 2**30)  # protobuf's 2 GB limit


def _parameter_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def onnx_parity(session: OnnxModel, reference: torch.Tensor, batch: dict, task: str, name: str,
                tolerance: float = ONNX_TOLERANCE) -> dict:
    """Compare the ONNX graph's logits with PyTorch's on the probe batch."""
    got = session(**batch).logits
    mask = batch["attention_mask"] if task == "causal_lm" else None
    diff = max_abs_diff(reference, got, mask)
    scale = max(1.0, float(reference.abs().max()))
    return {"name": name, "probes": int(batch["input_ids"].shape[0]), "max_abs_diff": diff, "logit_scale": scale,
            "tolerance": tolerance * scale, "passed": diff <= tolerance * scale}


def export_onnx(final_dir: Path, run_dir: Path | None, out: Path) -> dict:
    """Write ``out/model.onnx`` + tokenizer + tunesmith.json after the parity gate passes.

    Raises:
        ModelError: the export fails, or onnxruntime's logits differ from PyTorch's beyond tolerance.
    """
    model, tokenizer, meta, checks = exportable_model(final_dir, run_dir)
    batch = probe_batch(tokenizer, probe_texts(meta, tokenizer, run_dir), meta["task"], meta.get("max_length") or 512)
    reference = logits_of(model, batch)
    write_onnx(model, meta["task"], batch, out / ONNX_FILE)
    check = onnx_parity(OnnxModel(out / ONNX_FILE), reference, batch, meta["task"], "onnxruntime logits = PyTorch logits")
    checks.append(check)
    if not check["passed"]:
        raise ModelError(
            f"onnxruntime's logits differ from PyTorch's by {check['max_abs_diff']:.3g} "
            f"(allowed {check['tolerance']:.3g}); the graph in {out} is not trustworthy.",
            "Report the model type; serve with 'tunesmith serve' meanwhile.",
        )
    tokenizer.save_pretrained(out)
    write_model_meta(out, dict(meta, format="onnx"))
    return {"checks": checks, "model": model, "tokenizer": tokenizer, "meta": meta}
