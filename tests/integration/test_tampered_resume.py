"""Resume treats the run directory as untrusted: an edited or malformed manifest is rejected
by name and the previous checkpoint used; a torn log line or eval_before.json is repaired;
changed training data is refused unless --allow-data-change (docs/SECURITY.md)."""

from __future__ import annotations

import json

import pytest

from tunesmith.cli import main

from tests.conftest import copy_as_crashed_after

ARGS = ["--no-progress", "--set", "train.max_steps=12", "--set", "train.save_every=4", "--set", "train.log_every=1",
        "--set", "train.eval_every=100"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_bert_dir):
    from tunesmith.testing import write_cls_recipe

    folder = tmp_path_factory.mktemp("tamper")
    recipe = write_cls_recipe(folder, tiny_bert_dir)
    assert main(["train", str(recipe), "--output-dir", str(folder / "reference"), *ARGS]) == 0
    return recipe, folder / "reference"


def _resume(recipe, run, *extra) -> int:
    return main(["train", str(recipe), "--output-dir", str(run), "--resume", *ARGS, *extra])


@pytest.mark.parametrize("damage, reason", [
    ("step", "manifest.json was edited after it was written"),
    ("files-list", "manifest.json does not list the checkpoint's files"),
    ("not-json", "manifest.json is not valid JSON"),
])
def test_a_tampered_newest_checkpoint_is_rejected_by_name(reference, tmp_path, capsys, damage, reason):
    recipe, ref = reference
    run = copy_as_crashed_after(ref, tmp_path / "run", 8)
    manifest_path = run / "checkpoints" / "step-8" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "step":
        manifest["step"] = 11  # hashes of the files still match
        manifest_path.write_text(json.dumps(manifest))
    elif damage == "files-list":
        manifest_path.write_text(json.dumps(dict(manifest, files=[])))
    else:
        manifest_path.write_text(manifest_path.read_text()[:50])
    assert _resume(recipe, run) == 0
    out = capsys.readouterr().out
    assert f"step-8 rejected: {reason}; resuming from step-4" in out
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13))  # steps 5-8 logged once, again, after the rewind to 4


def test_a_torn_log_line_and_a_torn_eval_before_are_repaired(reference, tmp_path, capsys):
    recipe, ref = reference
    run = copy_as_crashed_after(ref, tmp_path / "run", 8)
    metrics = run / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 9, "lo')
    (run / "eval_before.json").write_text('{"metrics": {"accuracy"')
    assert _resume(recipe, run) == 0
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 13))
    before = json.loads((run / "summary.json").read_text())["eval_before"]
    assert before == json.loads((ref / "summary.json").read_text())["eval_before"]  # measured again, same numbers


def test_changed_training_data_needs_allow_data_change(reference, tmp_path, capsys):
    recipe, ref = reference
    run = copy_as_crashed_after(ref, tmp_path / "run", 8)
    train = recipe.parent / "train.jsonl"
    original = train.read_text()
    rows = original.splitlines()
    try:
        train.write_text("\n".join(rows[1:] + rows[:1]) + "\n")  # same path, same rows, other order
        assert _resume(recipe, run) == 2
        err = capsys.readouterr().err
        assert "training data changed since checkpoint step-8" in err and "--allow-data-change" in err
        assert _resume(recipe, run, "--allow-data-change") == 0
        assert "the base model is scored again" in capsys.readouterr().out
        assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    finally:
        train.write_text(original)


def test_a_second_run_into_a_running_run_directory_fails_naming_the_holder(reference, tmp_path, capsys):
    from tunesmith.testing import finish, start_train, wait_for_lines

    recipe, _ = reference
    run = tmp_path / "busy"
    first = start_train(recipe, run, "--no-progress", "--set", "train.max_steps=300", "--set", "train.log_every=1",
                        "--set", "train.save_every=1000")
    try:
        assert wait_for_lines(first, run, 3) is not None
        for extra in (["--overwrite"], ["--resume"]):
            assert main(["train", str(recipe), "--output-dir", str(run), *ARGS, *extra]) == 2
            assert f"is in use by another tunesmith process (pid {first.pid})" in capsys.readouterr().err
    finally:
        assert finish(first) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 301))  # the first run's log, untouched by the refused ones
