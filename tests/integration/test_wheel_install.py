"""A wheel built from the repo carries its recipes: `tunesmith demo` runs from a plain install.

The wheel is installed with ``--no-deps`` into a fresh venv whose dependencies come from
the test environment through a ``.pth`` line (a directory named there is only added to
``sys.path``; its own ``.pth`` files, such as the editable install's hook, are not run), so
the ``tunesmith`` the venv imports is the wheel's and nothing else.
"""

from __future__ import annotations

import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_ships_the_recipes_and_runs_the_demo(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(REPO),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("tunesmith-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"tunesmith/recipes/demo.yaml", "tunesmith/recipes/sft-identity-lora.yaml"} <= set(names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  check=True, capture_output=True, text=True).stdout.strip())
    deps = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (purelib / "test-deps.pth").write_text("\n".join(dict.fromkeys(deps)) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True)
    where = subprocess.run([python, "-c", "import tunesmith; print(tunesmith.__file__)"],
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(env_dir)), where  # the wheel's copy, not the repo's

    tunesmith = env_dir / "bin" / "tunesmith"
    assert "tunesmith demo" in subprocess.run([tunesmith, "demo", "--help"], check=True, capture_output=True,
                                              text=True).stdout
    run = subprocess.run([tunesmith, "demo", "--no-progress", "--output-dir", str(tmp_path / "demo"),
                          "--set", "data.max_train_samples=64", "--set", "data.max_eval_samples=32",
                          "--set", "train.max_steps=2"], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (tmp_path / "demo" / "final" / "tunesmith.json").is_file()
