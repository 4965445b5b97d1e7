#!/usr/bin/env bash
# Set up (once) and run the shipped demo: LoRA on MiniLM for movie-review sentiment.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${TUNESMITH_VENV:-.venv}/bin/tunesmith" demo "$@"
