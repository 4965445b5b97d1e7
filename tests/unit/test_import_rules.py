"""The import rules of docs/ARCHITECTURE.md, checked on the source (imports inside functions count)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tunesmith"


def imports_of(package: str) -> dict[str, set[str]]:
    """module path -> every tunesmith module it imports, anywhere in the file."""
    found = {}
    for path in sorted((SRC / package).rglob("*.py")) if (SRC / package).is_dir() else [SRC / f"{package}.py"]:
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        found[str(path.relative_to(SRC))] = {n for n in names if n.startswith("tunesmith")}
    return found


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{module} imports {name}" for module, names in imports_of(package).items()
            for name in sorted(names) if name.startswith(forbidden)]


def test_the_loop_does_not_know_the_method():
    assert offenders("train", ("tunesmith.methods",)) == []


def test_serve_uses_neither_export_nor_objective_internals():
    assert offenders("serve", ("tunesmith.export", "tunesmith.objectives", "tunesmith.runner")) == []


def test_objectives_produce_outputs_and_leave_metric_policy_to_eval():
    assert offenders("objectives", ("tunesmith.eval.metrics", "tunesmith.eval.evaluate", "tunesmith.runner")) == []


def test_lower_floors_do_not_import_the_stages_above_them():
    for floor in ("config", "data", "models", "rundir", "storage", "jsonl", "errors", "paths"):
        assert offenders(floor, ("tunesmith.runner", "tunesmith.train", "tunesmith.export", "tunesmith.serve",
                                 "tunesmith.compare", "tunesmith.cli", "tunesmith.methods")) == [], floor


def test_no_module_imports_code_by_name():
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "import_module" not in text and "__import__" not in text, path


def test_only_the_run_directory_module_names_run_files():
    for path in SRC.rglob("*.py"):
        if path.name != "rundir.py":
            code = ast.parse(path.read_text(encoding="utf-8"))
            literals = [n.value for n in ast.walk(code) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            docstrings = {ast.get_docstring(n) for n in ast.walk(code)
                          if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef))}
            for name in ("tunesmith.json", "summary.json", "eval_set.jsonl", "predictions.jsonl", "probes.json"):
                assert not [v for v in literals if v == name or v.endswith("/" + name)
                            if v not in docstrings], f"{path.name} writes {name} itself"


def test_a_recipe_is_checked_without_importing_torch():
    code = ("import sys; from tunesmith.config.load import validate_recipe; "
            "validate_recipe({'name': 'x', 'task': 'classification', 'model': {'name': 'm'}, "
            "'data': {'train': 'a.jsonl'}, 'method': {'type': 'adalora'}}); "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_catalog_floor_imports_only_catalogs():
    """config/ reads the task registry but nothing from data, models, methods or the stages."""
    allowed = ("tunesmith.config", "tunesmith.errors", "tunesmith.objectives.tasks")
    found = [f"{module} imports {name}" for module, names in imports_of("config").items()
             for name in sorted(names) if not name.startswith(allowed)]
    assert found == []


def test_the_ui_runs_training_as_processes_not_in_its_own():
    assert offenders("ui", ("tunesmith.runner", "tunesmith.train", "tunesmith.objectives.causal_lm")) == []
