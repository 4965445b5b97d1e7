"""report.html in a real browser (Debian's headless Chromium, installed by scripts/setup.sh):
every section renders, the numbers are rounded, and a screenshot comes out."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


from tunesmith.cli import main

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is missing: scripts/setup.sh installs Debian's chromium package"
    return path


def _render(report: Path, tmp_path: Path) -> tuple[str, Path]:
    """The DOM after Chromium loaded the page, and a full-page screenshot."""
    common = [_chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120).stdout
    shot = tmp_path / "report.png"
    subprocess.run([*common, "--window-size=1100,2400", f"--screenshot={shot}", report.as_uri()],
                   capture_output=True, timeout=120)
    return dom, shot


def test_classification_report_renders_every_section(cls_recipe, tmp_path):
    run = tmp_path / "run"
    assert main(["train", str(cls_recipe), "--quiet", "--output-dir", str(run), "--set", "train.max_steps=6",
                 "--set", "train.eval_every=3", "--set", "train.log_every=1"]) == 0
    dom, shot = _render(run / "report.html", tmp_path)
    for section in ("evaluation", "per-class", "training", "loading", "data", "events", "environment", "config"):
        assert f'id="{section}"' in dom, section
    for image in ("loss.png", "optimizer.png", "eval.png", "confusion.png"):
        assert f'src="{image}"' in dom and (run / image).stat().st_size > 5_000
    assert not re.search(r"\d\.\d{5,}", dom.split('id="config"')[0])  # no unrounded numbers above the config
    assert "torch" in dom.split('id="environment"')[1] and "max_steps: 6" in dom
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1100, 2400)
        assert len(set(image.convert("L").resize((64, 128)).getdata())) > 20  # a rendered page, not a blank one


def test_chat_report_shows_held_out_answers_next_to_references(chat_recipe, tmp_path):
    run = tmp_path / "chat"
    assert main(["train", str(chat_recipe), "--quiet", "--output-dir", str(run), "--set", "train.max_steps=4"]) == 0
    dom, _ = _render(run / "report.html", tmp_path)
    assert 'id="samples"' in dom and "i am quill, made by the tunesmith team." in dom
    assert 'src="eval.png"' not in dom  # eval loss is drawn once, in loss.png
