"""Two-rank DDP runs for the tuners' tests: the launcher (test side) and the training boilerplate (rank side).

accelerate's ``--cpu`` launcher starts one process per machine unless given an MPI hostfile, so the two ranks come
from its torchrun path (``--multi_gpu``) with CUDA hidden: torchrun spawns them and they join a gloo group on CPU.
Each rank saves what it holds to ``<out>/rank<i>.pt``; the test loads both files and compares them.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments


def launch_two_gloo_ranks(script: Path, out: Path) -> list[dict]:
    """Run ``script out`` on 2 CPU gloo ranks; return the two ranks' saved payloads (world size checked)."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(script), str(out),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(out / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert ranks[0]["world_size"] == 2
    return ranks


class DivergeGlobalRNG(TrainerCallback):
    """Give each rank a different global RNG stream: the tuner's draws must not depend on it."""

    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1000 + args.process_index)


def train_on_rank(make_model: Callable, out: Path, max_steps: int, train_dataset) -> tuple:
    """On one rank: build the model (one CPU thread), train it in the stock Trainer; returns (model, trainer)."""
    torch.set_num_threads(1)
    model = make_model()
    args = TrainingArguments(
        out,
        max_steps=max_steps,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train_dataset, callbacks=[DivergeGlobalRNG()])
    trainer.train()
    return model, trainer


def save_rank(trainer, out: Path, **payload) -> None:
    """``payload`` and the world size to ``<out>/rank<i>.pt``."""
    args = trainer.args
    torch.save({**payload, "world_size": args.world_size}, out / f"rank{args.process_index}.pt")
