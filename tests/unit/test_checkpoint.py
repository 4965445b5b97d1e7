"""Atomic checkpoints: layout, manifest hashes, tamper detection, safe reload."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from tunesmith.train.checkpoint import MANIFEST, is_valid_checkpoint, save_checkpoint
from tunesmith.train.optim import build_optimizer, build_scheduler


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=2
    )
    model = BertForSequenceClassification(config)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    scheduler = build_scheduler(optimizer, "cosine", warmup_steps=2, total_steps=10)
    for _ in range(3):  # give the optimizer real state to save
        out = model(input_ids=torch.randint(0, 100, (2, 6)), labels=torch.tensor([0, 1]))
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


def test_save_writes_step_dir_with_manifest(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {"epoch": 0.5, "rng": [1, 2]})
    assert path == tmp_path / "checkpoints" / "step-3"
    assert path.is_dir()
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["step"] == 3 and manifest["epoch"] == 0.5 and manifest["state"]["rng"] == [1, 2]
    assert "trainer_state.pt" in manifest["files"]
    assert "model/model.safetensors" in manifest["files"]
    assert "model/config.json" in manifest["files"]
    assert MANIFEST not in manifest["files"]
    assert is_valid_checkpoint(path)
    # nothing half-written left behind
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-3"]


def test_saved_weights_reload_identically(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    again = BertForSequenceClassification.from_pretrained(path / "model")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_optimizer_state_reloads_with_weights_only(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    assert state["scheduler"]["last_epoch"] == 3
    fresh_opt = build_optimizer(model, lr=1e-3, weight_decay=0.01)
    fresh_opt.load_state_dict(state["optimizer"])
    fresh_sched = build_scheduler(fresh_opt, "cosine", warmup_steps=2, total_steps=10)
    fresh_sched.load_state_dict(state["scheduler"])
    assert fresh_sched.get_last_lr() == scheduler.get_last_lr()
    p = model.classifier.weight
    assert torch.equal(fresh_opt.state[p]["exp_avg"], optimizer.state[p]["exp_avg"])
    assert fresh_opt.state[p]["step"] == 3


def test_tampered_file_makes_checkpoint_invalid(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    weights = path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert not is_valid_checkpoint(path)


def test_missing_file_makes_checkpoint_invalid(tmp_path, trained):
    model, optimizer, scheduler = trained
    path = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, {})
    (path / "trainer_state.pt").unlink()
    assert not is_valid_checkpoint(path)


def test_directory_without_manifest_is_invalid(tmp_path):
    unfinished = tmp_path / "checkpoints" / "step-9"
    unfinished.mkdir(parents=True)
    (unfinished / "trainer_state.pt").write_bytes(b"partial")
    assert not is_valid_checkpoint(unfinished)
    assert not is_valid_checkpoint(tmp_path / "does-not-exist")


def test_corrupt_manifest_is_invalid(tmp_path):
    path = tmp_path / "step-1"
    path.mkdir()
    (path / MANIFEST).write_text("{not json")
    assert not is_valid_checkpoint(path)
    (path / MANIFEST).write_text(json.dumps({"step": 1}))  # no file list
    assert not is_valid_checkpoint(path)


def test_saving_same_step_again_replaces_it(tmp_path, trained):
    model, optimizer, scheduler = trained
    save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {"epoch": 1})
    stale = tmp_path / "checkpoints" / "step-5" / "stale.txt"
    stale.write_text("old")
    path = save_checkpoint(tmp_path, 5, model, optimizer, scheduler, {"epoch": 2})
    assert not stale.exists()
    assert json.loads((path / MANIFEST).read_text())["epoch"] == 2
    save_checkpoint(tmp_path, 6, model, optimizer, scheduler, {})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-5", "step-6"]


def test_pruning_renames_before_deleting_so_no_broken_step_dir_remains(tmp_path, monkeypatch, trained):
    import shutil as shutil_module

    from tunesmith.train import checkpoint as ckpt_module

    model, optimizer, scheduler = trained
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, {"epoch": 0})

    # A deletion that dies half-way (as under SIGKILL) must not leave a step-N behind.
    def dying_rmtree(path, ignore_errors=False):
        raise SystemExit("killed")

    real_rmtree = shutil_module.rmtree
    monkeypatch.setattr(ckpt_module.shutil, "rmtree", dying_rmtree)
    with pytest.raises(SystemExit):
        ckpt_module.prune_checkpoints(tmp_path, 2, set())
    monkeypatch.setattr(ckpt_module.shutil, "rmtree", real_rmtree)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names[1:] == ["step-2", "step-3"] and names[0].startswith(".tmp-delete-step-1")
    ckpt_module.remove_stale_temp_dirs(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-2", "step-3"]
