#!/usr/bin/env bash
# Set up (once) and run the test suite (add -m slow for the long end-to-end checks).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The report's and the review page's browser tests drive Debian's headless Chromium through
# chromedriver (Playwright's browser download is not reachable everywhere); installed here,
# not in setup.sh, so the demo does not pay for it.
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi
exec "${TUNESMITH_VENV:-.venv}/bin/python" -m pytest -q "$@"
