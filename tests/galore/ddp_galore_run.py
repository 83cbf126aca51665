"""Train the tiny LLaMA with optim="galore_adamw" for a few steps; run by test_galore_ddp.py, alone or under
``accelerate launch --num_processes 2 --cpu``. Writes the logged losses (rank 0) and each rank's projectors."""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from galore_tiny import RandomTokens, galore_args, logged, tiny_llama  # noqa: E402
from transformers import Trainer  # noqa: E402

import hf_pept  # noqa: E402, F401


def main(output_dir: str, per_device_batch: int) -> None:
    torch.set_num_threads(1)
    args = galore_args(
        output_dir,
        "galore_adamw",
        optim_args="rank=8,update_proj_gap=3,scale=0.25,proj_method=randomized",
        per_device_train_batch_size=per_device_batch,
        max_steps=6,
        save_strategy="no",
        # the same sample order for 1 and 2 processes (a shuffled sampler is seeded per process layout)
        train_sampling_strategy="sequential",
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    projectors = [
        optimizer.state[p]["projector"]
        for g in optimizer.param_groups
        for p in g["params"]
        if "projector" in optimizer.state[p]
    ]
    rank = trainer.args.process_index
    torch.save(projectors, os.path.join(output_dir, f"projectors_rank{rank}.pt"))
    if rank == 0:
        with open(os.path.join(output_dir, "losses.json"), "w") as f:
            json.dump(logged(trainer), f)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
