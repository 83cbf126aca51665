#!/usr/bin/env bash
# Installs hf-pept (editable) with its test extras into the given Python's environment.
# On machines that carry a CPU build of torch on disk (e.g. /opt/wheels), that file is used instead of
# downloading a multi-GB CUDA build from PyPI.
set -euo pipefail
PY=${1:-python3}
extra_args=()
for dir in /opt/wheels /opt/pypi-more/files; do
  [ -d "$dir" ] && extra_args+=(--find-links "$dir")
done
cpu_torch=$(ls /opt/wheels/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
if [ -n "$cpu_torch" ] && ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "${extra_args[@]}" "$cpu_torch"
fi
"$PY" -m pip install -q "${extra_args[@]}" -e ".[test,plot]"
