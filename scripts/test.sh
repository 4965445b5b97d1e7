#!/usr/bin/env bash
# Set up (once) and run the test suite (add -m slow for the long end-to-end checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec "${TUNESMITH_VENV:-.venv}/bin/python" -m pytest -q "$@"
