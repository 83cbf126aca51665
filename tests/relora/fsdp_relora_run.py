"""ReLoRA on a fully_shard-ed tiny LLaMA, 2 gloo ranks; run by test_relora_fsdp.py under torch.distributed.run.

Each rank trains the sharded peft model (torch AdamW, ReLoRAStepper: merges at steps 3 and 6, optimizer reset,
jagged LR) on its half of every global batch; rank 0 then trains the unsharded model on the whole global batches.
Usage: ``fsdp_relora_run.py OUT RESET_MODE``.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsdp_launch import (  # noqa: E402
    CollectiveCounter,
    global_batch,
    init_rank,
    mean_over_ranks,
    rank_batch,
    shard,
    state_bytes,
    tiny_llama,
    write_rank,
)
from peft import get_peft_model  # noqa: E402
from transformers import get_constant_schedule  # noqa: E402

from hf_pept import ReLoRAConfig  # noqa: E402
from hf_pept.relora import ReLoRAStepper  # noqa: E402

STEPS = 7  # merges after optimizer steps 3 and 6


def build(reset: str, seed: int = 0):
    config = ReLoRAConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        relora_steps=3,
        restart_warmup_steps=1,
        optimizer_reset=reset,
        prune_ratio=0.9 if reset == "magnitude" else 0.5,
    )
    return get_peft_model(tiny_llama(seed=seed), config)


def train(model, batch_of, loss_of) -> dict:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    scheduler = get_constant_schedule(optimizer)
    relora = ReLoRAStepper(model, optimizer, scheduler)
    losses, step_collectives, merge_collectives, events = [], [], [], []
    for step in range(STEPS + 1):
        ids = batch_of(step)
        loss = model(input_ids=ids, labels=ids).loss
        losses.append(loss_of(loss))
        if step == STEPS:
            break
        loss.backward()
        counter = CollectiveCounter()
        with counter:
            optimizer.step()
        step_collectives.append(len(counter.names))
        scheduler.step()
        optimizer.zero_grad()
        counter = CollectiveCounter()
        with counter:
            new_events = relora.step()
        if new_events:
            merge_collectives.append(len(counter.names))
            events += [
                {k: v for k, v in e.items() if k in ("event", "layers", "zeroed", "entries")} for e in new_events
            ]
    return {
        "losses": losses,
        "collectives": step_collectives,
        "merge_collectives": merge_collectives,
        "events": events,
        "state_bytes": state_bytes(optimizer),
        "lr": scheduler.get_last_lr(),
    }


def main(out: str, reset: str) -> None:
    rank, world = init_rank()
    model = build(reset)
    llama = model.base_model.model
    shard(llama, llama.model.layers)
    payload = train(model, lambda s: rank_batch(s, rank), mean_over_ranks)
    if rank == 0:
        payload["reference"] = train(build(reset), global_batch, lambda loss: float(loss.detach()))
    write_rank(Path(out), rank, {**payload, "world_size": world})
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
