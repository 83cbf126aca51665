#!/usr/bin/env bash
# Data-parallel pre-training with GaLore through `accelerate launch` (2 processes; on CPU they use gloo).
# Usage: bash examples/ddp_accelerate.sh [--max_steps N] [--model tiny]   (extra options go to the script)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
NUM_PROCESSES="${NUM_PROCESSES:-2}"
if python -c "import torch, sys; sys.exit(0 if torch.cuda.device_count() >= ${NUM_PROCESSES} else 1)"; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"
else
    # Not enough GPUs: the ranks run on the CPU and join a gloo group. accelerate's --cpu launcher starts one
    # process per machine without an MPI hostfile, so its torchrun path (--multi_gpu) spawns them, CUDA hidden.
    export CUDA_VISIBLE_DEVICES="" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
fi
exec accelerate launch --multi_gpu --num_processes "${NUM_PROCESSES}" --num_machines 1 --mixed_precision no \
    --dynamo_backend no "${HERE}/pretrain_galore.py" --output_dir "${OUTPUT_DIR:-runs/example-ddp}" "$@"
