"""Optimizer state per rank and collectives per optimizer step: one process vs FSDP2 on 2 CPU gloo ranks.

A small LLaMA (hidden 256, MLP 688, 4 layers, vocab 1024, sequences of 64 tokens) is trained for a few steps by
full-rank AdamW (for scale), GaLore-AdamW, GaLore + Fira and ReLoRA (torch AdamW on the factors, magnitude reset):
world size 1 is the plain, unsharded model; world size 2 shards it as accelerate's FSDP2 plugin does (``fully_shard``
per decoder layer, then the root). Measured per rank:

* bytes of optimizer state (every tensor in ``optimizer.state``; a DTensor counts its local shard), split into the
  row-sharded part and the replicated part (projectors, scalars);
* collectives issued inside ``optimizer.step()`` (c10d and functional collectives, counted by a dispatch mode) on an
  ordinary step and on a projector-refresh step, and for ReLoRA inside a merge + optimizer reset;
* wall time of ``optimizer.step()`` (median over the ordinary steps; a loaded 2-core machine, so only ratios within
  the run mean anything).

A second table trains the tiny LLaMA in one process with GaLore projecting each weight on its ``proj_type="std"``
side and on the right side (what FSDP2 uses for every weight), and reports the loss difference.

    python benchmarks/fsdp_state_and_collectives.py        # writes benchmarks/results/fsdp_cpu/
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(HERE))

STEPS, GAP, RANK = 8, 4, 32  # refreshes / merges after 0 and 4 steps
SEQ, VOCAB, GLOBAL_BATCH = 64, 1024, 4
# (method, world sizes): GaLore and Fira at world size 1 both with proj_type "std" (the single-process default) and
# "right" (the side FSDP2 projects every weight on, so the like-for-like baseline of world size 2)
RUNS = (
    ("adamw", (1, 2)),
    ("galore-std", (1,)),
    ("galore-right", (1, 2)),
    ("fira-std", (1,)),
    ("fira-right", (1, 2)),
    ("relora", (1, 2)),
)


def small_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=256,
        intermediate_size=688,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def build(method: str):
    """(model, GaLore knobs or None) for ``method``, unsharded."""
    model = small_llama()
    if method.startswith(("galore", "fira")):
        family, side = method.split("-")
        knobs = {"rank": RANK, "update_proj_gap": GAP, "scale": 0.25, "fira": family == "fira", "proj_type": side}
        return model, knobs
    if method == "relora":
        from peft import get_peft_model

        from hf_pept import ReLoRAConfig

        config = ReLoRAConfig(r=RANK, lora_alpha=32, lora_dropout=0.0, relora_steps=GAP, restart_warmup_steps=1)
        return get_peft_model(model, config), None
    return model, None


def make_optimizer(method: str, model, knobs):
    from hf_pept.galore import GaLoreAdamW

    if knobs is not None:
        projected = [p for n, p in model.named_parameters() if ".self_attn." in n or ".mlp." in n]
        other = [p for n, p in model.named_parameters() if not (".self_attn." in n or ".mlp." in n)]
        return GaLoreAdamW([{"params": other}, {"params": projected, **knobs}], lr=1e-3)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def worker(out: str, method: str) -> None:
    """One rank of one method: train STEPS steps, record state bytes, collectives and step times."""
    from fsdp_launch import CollectiveCounter, init_rank, shard, state_bytes

    from hf_pept.fsdp import is_dtensor

    rank, world = init_rank()
    model, knobs = build(method)
    if world > 1:
        llama = model.base_model.model if method == "relora" else model
        shard(llama, llama.model.layers)
    optimizer = make_optimizer(method, model, knobs)
    stepper = None
    if method == "relora":
        from hf_pept.relora import ReLoRAStepper

        stepper = ReLoRAStepper(model, optimizer)
    per_rank = GLOBAL_BATCH // world
    rows = []
    for step in range(STEPS):
        ids = torch.randint(0, VOCAB, (GLOBAL_BATCH, SEQ), generator=torch.Generator().manual_seed(step))
        ids = ids[rank * per_rank : (rank + 1) * per_rank]
        model(input_ids=ids, labels=ids).loss.backward()
        counter = CollectiveCounter()
        start = time.perf_counter()
        with counter:
            optimizer.step()
        seconds = time.perf_counter() - start
        optimizer.zero_grad()
        merge = None
        if stepper is not None:
            merge_counter = CollectiveCounter()
            with merge_counter:
                events = stepper.step()
            merge = len(merge_counter.names) if events else None
        rows.append({"step": step, "collectives": len(counter.names), "seconds": seconds, "merge": merge})
    state = state_bytes(optimizer)
    sharded = sum(
        v.to_local().numel() * v.to_local().element_size()
        for s in optimizer.state.values()
        for v in s.values()
        if is_dtensor(v)
    )
    payload = {"steps": rows, "state_bytes": sum(state.values()), "sharded_bytes": sharded, "by_key": state}
    Path(out, f"{method}_world{world}_rank{rank}.json").write_text(json.dumps(payload))
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


def launch(out: Path, method: str, world: int) -> None:
    from fsdp_launch import free_port

    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), __file__, "--worker", str(out), method,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])


def side_comparison(steps: int = 60) -> dict:
    """Tiny LLaMA, one process, 4 fixed batches cycled: GaLore with proj_type 'std' vs 'right'."""
    from fsdp_launch import tiny_llama

    from hf_pept.galore import GaLoreAdamW

    torch.set_num_threads(1)
    curves = {}
    for proj_type in ("std", "right"):
        model = tiny_llama()
        projected = [p for n, p in model.named_parameters() if ".self_attn." in n or ".mlp." in n]
        other = [p for n, p in model.named_parameters() if not (".self_attn." in n or ".mlp." in n)]
        knobs = {"rank": 8, "update_proj_gap": 20, "scale": 0.25, "proj_type": proj_type}
        optimizer = GaLoreAdamW([{"params": other}, {"params": projected, **knobs}], lr=1e-2)
        losses = []
        for step in range(steps):
            ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(step % 4))
            loss = model(input_ids=ids, labels=ids).loss
            losses.append(float(loss.detach()))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        curves[proj_type] = losses
    std, right = curves["std"], curves["right"]
    return {
        "steps": steps,
        "first_loss": std[0],
        "final_std": std[-1],
        "final_right": right[-1],
        "max_rel_diff": max(abs(a - b) / abs(a) for a, b in zip(std, right)),
        "mean_last10_std": statistics.mean(std[-10:]),
        "mean_last10_right": statistics.mean(right[-10:]),
    }


def refresh_route_comparison(steps: int = 13) -> dict[str, list[float]]:
    """Relative loss difference per step against GaLore's SVD refresh (one process, tiny LLaMA, gap 3, right side)
    when the projector has the same subspace but other column signs: the SVD's with each column's largest entry made
    positive, and the top-r eigenvectors of the Gram matrix GᵀG in fp64 and fp32 (the all-reduce route)."""
    from fsdp_launch import global_batch, tiny_llama

    import hf_pept.galore.optimizer as optimizer_module
    from hf_pept.galore import GaLoreAdamW

    svd = optimizer_module.compute_projectors

    def sign_fixed(grad, rank, side, **kwargs):
        (q,) = svd(grad, rank, side, **kwargs)
        signs = torch.sign(q[q.abs().argmax(0), torch.arange(q.shape[1])])
        return (q * signs,)

    def gram(dtype):
        def projectors(grad, rank, side, **kwargs):
            g = grad.detach().to(dtype)
            _, eigenvectors = torch.linalg.eigh(g.t() @ g)  # ascending
            return (eigenvectors[:, -rank:].flip(1).float().contiguous(),)

        return projectors

    routes = {
        "svd": svd,
        "svd, other signs": sign_fixed,
        "gram fp64": gram(torch.float64),
        "gram fp32": gram(torch.float32),
    }
    curves = {}
    torch.set_num_threads(1)
    try:
        for name, route in routes.items():
            optimizer_module.compute_projectors = route
            model = tiny_llama()
            projected = [p for n, p in model.named_parameters() if ".self_attn." in n or ".mlp." in n]
            other = [p for n, p in model.named_parameters() if not (".self_attn." in n or ".mlp." in n)]
            knobs = {"rank": 8, "update_proj_gap": 3, "scale": 0.25, "proj_type": "right"}
            optimizer = GaLoreAdamW([{"params": other}, {"params": projected, **knobs}], lr=1e-2, weight_decay=0.01)
            losses = []
            for step in range(steps):
                ids = global_batch(step)
                loss = model(input_ids=ids, labels=ids).loss
                losses.append(float(loss.detach()))
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            curves[name] = losses
    finally:
        optimizer_module.compute_projectors = svd
    reference = curves.pop("svd")
    return {name: [abs(a - b) / b for a, b in zip(losses, reference)] for name, losses in curves.items()}


def main() -> None:
    from bench_utils import environment

    env = environment()
    results = REPO / "benchmarks" / "results" / "fsdp_cpu"
    results.mkdir(parents=True, exist_ok=True)
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for method, worlds in RUNS:
            for world in worlds:
                launch(Path(tmp), method, world)
                for rank in range(world):
                    data = json.loads(Path(tmp, f"{method}_world{world}_rank{rank}.json").read_text())
                    steps = data["steps"]
                    refresh = [s for s in steps if s["step"] % GAP == 0]
                    ordinary = [s for s in steps if s["step"] % GAP != 0]
                    merges = [s["merge"] for s in steps if s["merge"] is not None]
                    table.append(
                        {
                            "method": method,
                            "world_size": world,
                            "rank": rank,
                            "state_MiB": data["state_bytes"] / 2**20,
                            "sharded_MiB": data["sharded_bytes"] / 2**20,
                            "replicated_MiB": (data["state_bytes"] - data["sharded_bytes"]) / 2**20,
                            "collectives_ordinary_step": max(s["collectives"] for s in ordinary),
                            "collectives_refresh_step": (
                                max(s["collectives"] for s in refresh) if method not in ("adamw", "relora") else ""
                            ),
                            "collectives_merge_and_reset": max(merges) if merges else "",
                            "step_ms_median": 1e3 * statistics.median(s["seconds"] for s in ordinary),
                        }
                    )
    single = {row["method"]: row["state_MiB"] for row in table if row["world_size"] == 1}
    for row in table:
        row["state_vs_world1"] = row["state_MiB"] / single[row["method"]]
    side = side_comparison()
    routes = refresh_route_comparison()

    stamp = env["date"][:10]
    hardware = (
        f"CPU ({os.cpu_count()} cores, shared), gloo; torch {env['torch']}, transformers {env['transformers']}, "
        f"python {env['python']}; {env['date']}"
    )
    with open(results / f"fsdp_state_and_collectives_{stamp}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    lines = [
        "# Optimizer state per rank and collectives per optimizer step, 1 process vs FSDP2 on 2 ranks",
        "",
        hardware,
        "",
        f"LLaMA hidden 256, MLP 688, 4 layers, vocab 1024; rank {RANK}; refresh / merge every {GAP} steps; "
        f"{STEPS} steps, global batch {GLOBAL_BATCH}×{SEQ}.",
        "",
        "State vs world 1: against the same method and projection side in one process.",
        "",
        "| method | world | rank | state (MiB) | sharded (MiB) | replicated (MiB) | vs world 1 | collectives: "
        "ordinary step | refresh step | merge + reset | step (ms, median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['method']} | {r['world_size']} | {r['rank']} | {r['state_MiB']:.3f} | {r['sharded_MiB']:.3f} | "
            f"{r['replicated_MiB']:.3f} | {r['state_vs_world1']:.3f} | {r['collectives_ordinary_step']} | "
            f"{r['collectives_refresh_step']} | {r['collectives_merge_and_reset']} | {r['step_ms_median']:.1f} |"
        )
    lines += [
        "",
        "## Projection side: 'std' (single-process default) vs 'right' (what FSDP2 uses for every weight)",
        "",
        f"Tiny LLaMA (hidden 32, MLP 64, 2 layers), one process, rank 8, gap 20, lr 1e-2, {side['steps']} steps over "
        "4 fixed random-token batches.",
        "",
        "| first loss | final loss std | final loss right | mean of last 10, std | mean of last 10, right | "
        "max relative difference over the curve |",
        "|---|---|---|---|---|---|",
        f"| {side['first_loss']:.4f} | {side['final_std']:.4f} | {side['final_right']:.4f} | "
        f"{side['mean_last10_std']:.4f} | {side['mean_last10_right']:.4f} | {side['max_rel_diff']:.2e} |",
    ]
    lines += [
        "",
        "## Refresh route: projector signs",
        "",
        "Relative loss difference per step against GaLore's SVD refresh (tiny LLaMA, one process, rank 8, refresh "
        "every 3 steps, right side, lr 1e-2): the same subspace with other column signs changes the curve from the "
        "second refresh on (step 4), because the moments carried across a refresh then meet turned-around columns.",
        "",
        "| route | " + " | ".join(f"step {i}" for i in range(len(next(iter(routes.values()))))) + " |",
        "|---|" + "---|" * len(next(iter(routes.values()))),
    ]
    for name, diffs in routes.items():
        lines.append(f"| {name} | " + " | ".join(f"{d:.1e}" for d in diffs) + " |")
    text = "\n".join(lines) + "\n"
    (results / f"fsdp_state_and_collectives_{stamp}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], sys.argv[3])
    else:
        main()
