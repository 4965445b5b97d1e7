"""Exports of a trained run: merged weights, ONNX, INT8 ONNX, GGUF (+ Ollama Modelfile); each writes ``export.json``."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

from tunesmith.errors import ConfigError
from tunesmith.rundir import UI_JOB, UI_LOG, holds_run_files

FORMATS = ("merged", "onnx", "int8", "gguf", "pruned")


def export_run(path: str | Path, to: str, out: str | Path | None = None, quant: str = "f16",
               prune: dict | None = None) -> dict:
    """Export the run at ``path`` (run dir or its final/) to ``to``; returns what export.json holds.

    ``out`` defaults to ``<run dir>/export-<to>``; ``quant`` is GGUF's (f16 or q8_0); ``prune``
    holds ``export_pruned``'s keyword arguments (``sparsity`` required) for ``to="pruned"``.

    Raises:
        ConfigError: unknown format, not a run, or a method the format cannot hold.
        ModelError: a parity gate failed (nothing usable is left in ``out``).
    """
    from tunesmith.rundir import resolve_final_dir

    if to not in FORMATS:
        raise ConfigError(f"Unknown export format '{to}'.", f"Use one of: {', '.join(FORMATS)}.")
    final_dir, run_dir = resolve_final_dir(path)
    out = Path(out) if out else (run_dir or final_dir.parent) / f"export-{to}"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is an existing file, not a folder.", "Name a new or empty folder.")
    if holds_run_files(out):  # the web UI's job record may already be there
        raise ConfigError(f"The export folder {out} already exists and is not empty.",
                          "Choose another --out, or delete the folder.")
    started = time.perf_counter()
    if to == "merged":
        from tunesmith.export.merge import export_merged

        result = export_merged(final_dir, run_dir, out)
    elif to == "onnx":
        from tunesmith.export.onnx import export_onnx

        result = export_onnx(final_dir, run_dir, out)
        for key in ("model", "tokenizer", "meta"):
            result.pop(key)
    elif to == "gguf":
        from tunesmith.export.gguf_export import export_gguf

        result = export_gguf(final_dir, run_dir, out, quant)
    elif to == "pruned":
        from tunesmith.export.pruned import export_pruned

        if not prune or prune.get("sparsity") is None:
            raise ConfigError("--to pruned needs --sparsity.", "For example: --sparsity 0.25 --structure ffn.")
        result = export_pruned(final_dir, run_dir, out, **prune)
    else:
        from tunesmith.export.quantize import export_int8

        result = export_int8(final_dir, run_dir, out)
    report = {
        "format": to,
        "source": str(final_dir),
        "out": str(out),
        **result,
        "files": {p.name: round(p.stat().st_size / 2**20, 3) for p in sorted(out.iterdir())
                  if p.is_file() and p.name not in (UI_JOB, UI_LOG)},
        "wall_s": round(time.perf_counter() - started, 2),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }
    (out / "export.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report
