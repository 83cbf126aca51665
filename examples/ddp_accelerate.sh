#!/usr/bin/env bash
# Data-parallel pre-training with GaLore through `accelerate launch` (2 processes; on CPU they use gloo).
# Usage: bash examples/ddp_accelerate.sh [--max_steps N] [--model tiny]   (extra options go to the script)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
CPU_FLAG=""
if ! python -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= ${NUM_PROCESSES} else 1)"; then
    CPU_FLAG="--cpu"  # not enough GPUs: run the processes on the CPU
fi
exec accelerate launch --num_processes "${NUM_PROCESSES}" --num_machines 1 --mixed_precision no \
    --dynamo_backend no ${CPU_FLAG} "${HERE}/pretrain_galore.py" --output_dir "${OUTPUT_DIR:-runs/example-ddp}" "$@"
