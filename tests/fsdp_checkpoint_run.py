"""Save and resume a sharded run with torch.distributed.checkpoint; run by test_fsdp_checkpoint.py under
torch.distributed.run.

``fsdp_checkpoint_run.py OUT METHOD full``: train STEPS steps without interruption, saving model and optimizer
(sharded: each rank writes its rows) after SAVE_AT steps. ``fsdp_checkpoint_run.py OUT METHOD resume``: new processes
build and shard a fresh model (other initial weights), load that checkpoint and train the remaining steps. METHOD is
``galore_fira`` (GaLoreAdamW with Fira: refreshes at steps 0, 3 and 6) or ``relora`` (torch AdamW, ReLoRAStepper:
merges and magnitude resets after steps 3 and 6). Each phase writes the losses it saw to ``OUT/<phase>/rank<i>.json``.
"""

import sys
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "galore"))
sys.path.insert(0, str(HERE / "relora"))

from fsdp_galore_run import CASES, optimizer_for  # noqa: E402
from fsdp_launch import init_rank, mean_over_ranks, rank_batch, shard, tiny_llama, write_rank  # noqa: E402
from transformers import get_constant_schedule  # noqa: E402

from hf_pept.relora import ReLoRAStepper  # noqa: E402

STEPS, SAVE_AT = 7, 4  # the refresh / merge after step 6 happens after the resume


def build(method: str, seed: int):
    """(model, its LLaMA): the tiny LLaMA, or the tiny LLaMA with a ReLoRA adapter."""
    if method == "galore_fira":
        model = tiny_llama(seed=seed)
        return model, model
    from fsdp_relora_run import build as build_relora

    model = build_relora("magnitude", seed=seed)
    return model, model.base_model.model


def make_optimizer(method: str, model):
    """Built after sharding, on the sharded parameters."""
    if method == "galore_fira":
        return optimizer_for(model, CASES["fira"])
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)


def main(out: str, method: str, phase: str) -> None:
    rank, world = init_rank()
    model, llama = build(method, seed=0 if phase == "full" else 1)
    shard(llama, llama.model.layers)
    optimizer = make_optimizer(method, model)
    checkpoint = str(Path(out) / "checkpoint")
    first = 0
    if phase == "resume":
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        first = SAVE_AT
    stepper = None
    if method == "relora":
        scheduler = get_constant_schedule(optimizer)
        # the schedule and the restarts depend on the step only: resuming needs the step, nothing else
        stepper = ReLoRAStepper(model, optimizer, scheduler, global_step=first)
        for _ in range(first):
            scheduler.step()
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
        if stepper is not None:
            scheduler.step()
            stepper.step()
    write_rank(Path(out) / phase, rank, {"losses": losses, "world_size": world})
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
