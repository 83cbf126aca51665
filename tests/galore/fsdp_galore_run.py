"""GaLore / Fira on a fully_shard-ed tiny LLaMA, 2 gloo ranks; run by test_galore_fsdp.py under torch.distributed.run.

Each rank trains the sharded model on its half of every global batch, counting the collectives of each
``optimizer.step()`` and the bytes of optimizer state it holds; rank 0 then trains the unsharded model on the whole
global batches (the single-process reference, same optimizer settings). Usage: ``fsdp_galore_run.py OUT CASE``.
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

from hf_pept.galore import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit  # noqa: E402

STEPS = 7  # refreshes at optimizer steps 0, 3 and 6
_RIGHT = {"rank": 8, "update_proj_gap": 3, "scale": 0.25, "proj_type": "right"}
CASES = {
    "galore": _RIGHT,
    "fira": {**_RIGHT, "fira": True},
    "galore_randomized": {**_RIGHT, "proj_method": "randomized"},
    # built before sharding, as the Trainer does under FSDP2 (accelerate then swaps in the sharded parameters)
    "galore_built_before_sharding": _RIGHT,
    "fira_uneven_shards": {**_RIGHT, "fira": True},
}
# MLP width 65: gate_proj and up_proj (65×32) split into 33 and 32 rows
MODEL_SIZES = {"fira_uneven_shards": {"intermediate_size": 65}}


def optimizer_for(model, knobs: dict) -> GaLoreAdamW:
    projected = [p for n, p in model.named_parameters() if ".self_attn." in n or ".mlp." in n]
    other = [p for n, p in model.named_parameters() if not (".self_attn." in n or ".mlp." in n)]
    groups = [{"params": other}, {"params": projected, **knobs}]
    return GaLoreAdamW(groups, lr=1e-2, weight_decay=0.01)


def train(model, optimizer, batch_of, loss_of) -> tuple[list[float], list[int]]:
    losses, collectives = [], []
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
        collectives.append(len(counter.names))
        optimizer.zero_grad()
    return losses, collectives


def swap_in_sharded_parameters(model, optimizer) -> None:
    """Shard ``model`` and put its sharded parameters into ``optimizer``'s param groups in place of the originals,
    by parameter name: what accelerate's FSDP2 preparation does to an optimizer built before sharding."""
    names = {id(p): n for n, p in model.named_parameters()}
    order = [[names[id(p)] for p in group["params"]] for group in optimizer.param_groups]
    shard(model, model.model.layers)
    sharded = dict(model.named_parameters())
    for group, group_names in zip(optimizer.param_groups, order):
        group["params"] = [sharded[n] for n in group_names]


def refusals(model) -> dict[str, str]:
    """The one-line errors of what does not run on sharded weights (layer-wise GaLore, 8-bit moments, Adafactor,
    the left projection)."""
    messages = {}
    projected = [p for n, p in model.named_parameters() if ".mlp." in n]
    attempts = {
        "layerwise": lambda: GaLoreAdamW([{"params": projected, "rank": 8}], layerwise=True),
        "adamw8bit": lambda: GaLoreAdamW8bit([{"params": projected, "rank": 8}]).step(),
        "adafactor": lambda: GaLoreAdafactor([{"params": projected, "rank": 8}]).step(),
        "left_projection": lambda: GaLoreAdamW([{"params": projected, "rank": 8, "proj_type": "left"}]).step(),
    }
    for name, attempt in attempts.items():
        try:
            attempt()
        except ValueError as error:
            messages[name] = str(error)
    return messages


def main(out: str, case: str) -> None:
    rank, world = init_rank()
    knobs = CASES[case]
    size = MODEL_SIZES.get(case, {})
    model = tiny_llama(**size)
    if case == "galore_built_before_sharding":
        optimizer = optimizer_for(model, knobs)
        swap_in_sharded_parameters(model, optimizer)
    else:
        shard(model, model.model.layers)
        optimizer = optimizer_for(model, knobs)
    losses, collectives = train(model, optimizer, lambda s: rank_batch(s, rank), mean_over_ranks)
    payload = {"losses": losses, "collectives": collectives, "state_bytes": state_bytes(optimizer)}
    payload["projector_updates"] = [e["step"] for e in optimizer.pop_events()]
    if case == "galore":
        ids = rank_batch(0, rank)
        model(input_ids=ids, labels=ids).loss.backward()
        payload["refusals"] = refusals(model)
    if rank == 0:
        reference = tiny_llama(**size)
        ref_optimizer = optimizer_for(reference, knobs)
        ref_losses, _ = train(reference, ref_optimizer, global_batch, lambda loss: float(loss))
        payload["reference"] = {"losses": ref_losses, "state_bytes": state_bytes(ref_optimizer)}
    write_rank(Path(out), rank, {**payload, "world_size": world})
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
