"""``export --to int8``: dynamic INT8 quantisation of the ONNX graph, with the metric re-measured.

Weights of every weight MatMul become int8 (activations are quantised on the fly), which
is what onnxruntime's ``quantize_dynamic`` does; three settings are tried and the one
that scores best on the held-out set is kept. The held-out set of the run is scored
three ways - PyTorch fp32, ONNX fp32, ONNX int8 - so the report shows what quantisation
itself costs, next to size on disk and latency per example.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.eval.metrics import rank_key
from tunesmith.export.measure import change, latency_ms, objective_for, score as _score
from tunesmith.export.onnx import ONNX_FILE, OnnxModel, export_onnx
from tunesmith.objectives.tasks import saved_spec
from tunesmith.rundir import RunDir, write_model_meta


# Candidate settings; each is scored on the held-out set and the best is kept, because
# which one wins depends on the model and the CPU. Measured (fp32 -> int8):
# - SmolLM2-135M eval loss 1.81: per-channel 18.8 (u8 x s8 products saturate on CPUs
#   without VNNI), per-tensor 2.37, per-channel with 7-bit reduce_range 2.25;
# - MiniLM demo accuracy 0.820: per-channel 0.804, per-channel + reduce_range 0.800.
SETTINGS = {
    "per-channel": {"per_channel": True, "reduce_range": False},
    "per-channel, reduce_range": {"per_channel": True, "reduce_range": True},
    "per-tensor": {"per_channel": False, "reduce_range": False},
}


def quantize_int8(fp32_path: Path, int8_path: Path, per_channel: bool = True, reduce_range: bool = False) -> None:
    """onnxruntime dynamic quantisation: int8 weights, uint8 activations quantised on the fly.

    Only MatMuls against constant weights are quantised; attention's activation x
    activation products stay in fp32.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # Shape inference and graph cleanup first, as onnxruntime recommends before quantising.
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        int8_path.parent.mkdir(parents=True, exist_ok=True)
        quantize_dynamic(str(prepared), str(int8_path), weight_type=QuantType.QInt8, per_channel=per_channel,
                         reduce_range=reduce_range, extra_options={"MatMulConstBOnly": True})


def best_int8(fp32_path: Path, out_path: Path, score) -> tuple[str, dict]:
    """Quantise with every setting of SETTINGS, keep the one ``score`` ranks best at ``out_path``.

    ``score(path)`` returns ``(sort_key, metrics)``; a higher key is better.
    Returns ``(chosen setting, {setting: metrics})``.
    """
    results, best = {}, None
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in SETTINGS.items():
            candidate = Path(tmp) / f"{len(results)}.onnx"
            quantize_int8(fp32_path, candidate, **options)
            key, metrics = score(candidate)
            results[name] = metrics
            if best is None or key > best[0]:
                best = (key, name, candidate)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(best[2], out_path)
    return best[1], results


def export_int8(final_dir: Path, run_dir: Path | None, out: Path) -> dict:
    """Write ``out/model.onnx`` (int8) and measure metric, size and latency against fp32.

    Raises:
        ConfigError: the run has no held-out set to measure on (``eval_set.jsonl``).
    """
    rows = RunDir(run_dir).eval_rows() if run_dir is not None else []
    if not rows:
        raise ConfigError(
            f"INT8 export re-measures the model on the run's held-out set, but {run_dir or final_dir} has no eval_set.jsonl.",
            "Point to the run directory (not a copied final/ folder) of a run made with this Tunesmith version.",
        )
    with tempfile.TemporaryDirectory() as tmp:
        fp32_dir = Path(tmp) / "fp32"
        result = export_onnx(final_dir, run_dir, fp32_dir)
        model, tokenizer, meta = result.pop("model"), result.pop("tokenizer"), result.pop("meta")
        objective = objective_for(meta, tokenizer)
        metrics = saved_spec(meta).metrics
        headline = metrics[0]
        features = objective.encode(rows)
        model.eval()
        # PyTorch first, before any onnxruntime session exists: idle onnxruntime threads
        # spin for a while after each call and would slow whatever runs beside them.
        scores = {"pytorch_fp32": _score(objective, model, features, metrics)}
        latency = {"pytorch_fp32": latency_ms(model, objective, features)}

        def score(path: Path):
            result = _score(objective, OnnxModel(path), features, metrics)
            return rank_key(headline, result[headline]), result

        chosen, candidates = best_int8(fp32_dir / ONNX_FILE, out / ONNX_FILE, score)
        for name, path in (("onnx_fp32", fp32_dir / ONNX_FILE), ("onnx_int8", out / ONNX_FILE)):
            session = OnnxModel(path)  # one session alive at a time, for the same reason
            scores[name] = candidates[chosen] if name == "onnx_int8" else _score(objective, session, features, metrics)
            latency[name] = latency_ms(session, objective, features)
            del session
        size = {"onnx_fp32": _size_mb(fp32_dir), "onnx_int8": _size_mb(out, only=ONNX_FILE)}
    tokenizer.save_pretrained(out)
    write_model_meta(out, dict(meta, format="onnx-int8"))
    result.update(
        eval_examples=len(features), quantization={"chosen": chosen, "candidates": candidates}, metrics=scores, latency_ms_per_example=latency, size_mb=size,
        change=change(scores["onnx_fp32"], scores["onnx_int8"]),
    )
    warning = _quality_warning(scores["onnx_fp32"], scores["onnx_int8"])
    if warning:
        result["warning"] = warning
    return result


def _quality_warning(fp32: dict, int8: dict) -> str | None:
    """A sentence when INT8 costs more than the guides' "under 2%" (accuracy points, or 5% eval loss)."""
    if "accuracy" in fp32 and fp32["accuracy"] - int8["accuracy"] > 0.02:
        return (f"INT8 lowers accuracy by {100 * (fp32['accuracy'] - int8['accuracy']):.1f} points "
                f"({fp32['accuracy']:.3f} -> {int8['accuracy']:.3f}); check it before shipping.")
    if "accuracy" not in fp32 and int8["eval_loss"] > 1.05 * fp32["eval_loss"]:
        return (f"INT8 raises the eval loss by {100 * (int8['eval_loss'] / fp32['eval_loss'] - 1):.0f}% "
                f"({fp32['eval_loss']:.3f} -> {int8['eval_loss']:.3f}); dynamic INT8 suits encoders better than "
                "generative models, check answers before shipping.")
    return None


def _size_mb(folder: Path, only: str | None = None) -> float:
    files = [folder / only] if only else [p for p in folder.iterdir() if p.name.startswith("model.onnx")]
    return round(sum(p.stat().st_size for p in files if p.is_file()) / 2**20, 2)
