"""Save and resume a sharded GaLore + Fira run with torch.distributed.checkpoint; run by
test_galore_fsdp_checkpoint.py under torch.distributed.run.

``fsdp_checkpoint_run.py OUT full``: train STEPS steps without interruption, saving model and optimizer (sharded:
each rank writes its rows) after SAVE_AT steps. ``fsdp_checkpoint_run.py OUT resume``: new processes build and shard
a fresh model, load that checkpoint and train the remaining steps. Each writes the losses it saw to rank<i>.json.
"""

import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from fsdp_galore_run import CASES, optimizer_for  # noqa: E402
from fsdp_launch import init_rank, mean_over_ranks, rank_batch, shard, tiny_llama, write_rank  # noqa: E402

STEPS, SAVE_AT = 7, 4  # refreshes at steps 0, 3 and 6: the one at 6 happens after the resume


def main(out: str, phase: str) -> None:
    rank, world = init_rank()
    model = tiny_llama(seed=0 if phase == "full" else 1)  # the resumed run must get its weights from the checkpoint
    shard(model, model.model.layers)
    optimizer = optimizer_for(model, {**CASES["fira"]})
    checkpoint = str(Path(out) / "checkpoint")
    first = 0
    if phase == "resume":
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        first = SAVE_AT
    losses = {}
    for step in range(first, STEPS + 1):
        if phase == "full" and step == SAVE_AT:
            model_state, optimizer_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=checkpoint)
        ids = rank_batch(step, rank)
        loss = model(input_ids=ids, labels=ids).loss
        losses[step] = mean_over_ranks(loss)
        if step == STEPS:
            break
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    steps = {int(s["step"]) for s in optimizer.state.values() if "projector" in s}
    write_rank(Path(out) / phase, rank, {"losses": losses, "world_size": world, "galore_steps": sorted(steps)})
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
