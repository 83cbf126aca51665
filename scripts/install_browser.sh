#!/usr/bin/env bash
# What the app's browser test needs: Chromium from Debian (no browser download by Playwright) and the Python
# packages gradio + playwright in the given interpreter's environment. Idempotent; a no-op when all are there.
set -euo pipefail
PY=${1:-python3}
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
if ! "$PY" -c "import gradio, playwright, matplotlib, psutil" 2>/dev/null; then
  "$PY" -m pip install -q "gradio>=5.0" "playwright>=1.40" "matplotlib>=3.7" "psutil>=5.9"
fi
