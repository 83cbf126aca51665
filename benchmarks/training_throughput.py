"""Training throughput (tokens/s) and peak memory per method on LLaMA 60M/350M/1B shapes (CUDA).

Methods, each in a fresh model built from config on the GPU (bf16 weights and gradients; optimizer state in the
weights' dtype, as ``torch.optim.AdamW`` keeps it):

* ``full``: full-rank training with ``torch.optim.AdamW(fused=True)``;
* ``lora``: peft LoRA on the attention and MLP projections, rank r, adapters cast to bf16 (peft would keep them in
  fp32), trainable embeddings and head, fused AdamW over what trains;
* ``relora``: ``hf_pept.ReLoRAConfig`` with the same rank; the steady-state step is LoRA's, and one merge +
  magnitude-pruning reset is timed separately and amortised over ``--relora-steps``;
* ``galore``: ``hf_pept.GaLoreAdamW`` (attention/MLP weights projected at rank r, scale 0.25, the rest plain AdamW),
  with the Triton kernels (``galore``) and with ``HF_PEPT_DISABLE_KERNELS=1`` (``galore-reference``); the first step
  refreshes the projectors (randomized range finder) and its extra time is amortised over ``--update-proj-gap``;
* ``galore-torch``: galore-torch's AdamW where it is installed (its projectors pre-filled with orthonormal bases so
  that its exact-SVD refresh stays out of the steady-state step; the SVD's cost is in kernels_gpu.py's table).

Each run: a few warm-up steps, then timed steps (CUDA-synchronised wall clock). Random token batches: throughput
does not depend on the data. Peak memory is ``torch.cuda.max_memory_allocated`` over the timed steps, next to
``hf_pept.memory.estimate`` for the same run. Ratios against ``full`` are computed in the same run.

Usage: ``python benchmarks/training_throughput.py [--sizes 60m 350m 1b] [--methods ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import time

import torch
from bench_utils import (
    device_slug,
    environment,
    load_galore_torch_adamw,
    prefill_galore_torch_projectors,
    write_csv,
)

RANKS = {"tiny": 8, "60m": 128, "350m": 256, "1b": 512}  # tiny: a CPU smoke run of this script (--device cpu)
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# LoRA and ReLoRA train the embeddings and the output head full-rank (ReLoRA paper §4; hf_pept.memory counts them)
EMBEDDINGS = ["embed_tokens", "lm_head"]
METHODS = ["full", "lora", "relora", "galore", "galore-reference", "galore-torch"]


DEVICE = torch.device("cuda")


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def build_model(size: str, vocab_size: int, seq_len: int):
    from transformers import LlamaForCausalLM

    from hf_pept.models import llama_config

    config = llama_config(size, vocab_size, max_position_embeddings=seq_len)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with DEVICE:
            torch.manual_seed(0)
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model


def is_projected(name: str, param: torch.nn.Parameter) -> bool:
    return param.dim() == 2 and any(target in name for target in TARGETS)


def make_optimizer(method: str, model, rank: int, args):
    """(model, optimizer, extra) for one method; ``extra`` holds what the method needs after each step."""
    import hf_pept

    lr, decay = 1e-3, 0.0
    if method == "full":
        return model, torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay, fused=True), {}
    if method in ("lora", "relora"):
        from peft import LoraConfig, get_peft_model

        if method == "lora":
            config = LoraConfig(
                r=rank, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, modules_to_save=EMBEDDINGS
            )
        else:
            config = hf_pept.ReLoRAConfig(
                r=rank,
                lora_alpha=32,
                lora_dropout=0.0,
                target_modules=TARGETS,
                modules_to_save=EMBEDDINGS,
                relora_steps=args.relora_steps,
                restart_warmup_steps=min(100, args.relora_steps - 1),
                optimizer_reset="magnitude",
                prune_ratio=0.9,
            )
        # peft keeps adapters in fp32 beside bf16 weights by default; all-bf16 as the other methods here.
        model = get_peft_model(model, config).to(torch.bfloat16)
        trainable = [p for p in model.parameters() if p.requires_grad]
        return model, torch.optim.AdamW(trainable, lr=lr, weight_decay=decay, fused=True), {}
    named = list(model.named_parameters())
    projected = [p for n, p in named if is_projected(n, p)]
    regular = [p for n, p in named if not is_projected(n, p)]
    knobs = {"rank": rank, "update_proj_gap": args.update_proj_gap, "scale": 0.25, "proj_type": "std"}
    if method in ("galore", "galore-reference"):
        groups = [{"params": regular}, {"params": projected, **knobs, "proj_method": "randomized"}]
        return model, hf_pept.GaLoreAdamW(groups, lr=lr, weight_decay=decay), {}
    if method == "galore-torch":
        baseline = load_galore_torch_adamw()
        if baseline is None:
            return model, None, {}
        optimizer = baseline([{"params": regular}, {"params": projected, **knobs}], lr=lr, weight_decay=decay)
        prefill_galore_torch_projectors(optimizer, projected, rank, args.update_proj_gap)
        return model, optimizer, {}
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")


def train_steps(model, optimizer, batch, steps: int) -> list[float]:
    """Seconds per step (forward, backward, optimizer step, zero_grad), CUDA-synchronised."""
    times = []
    for _ in range(steps):
        synchronize()
        start = time.perf_counter()
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        times.append(time.perf_counter() - start)
    return times


def relora_restart_ms(model, optimizer) -> float:
    """One ReLoRA restart as the stepper does it: merge + re-init every layer, magnitude-prune the factors' moments."""
    from hf_pept.optim_state import reset_optimizer_state
    from hf_pept.relora.stepper import find_relora_model

    relora = find_relora_model(model)
    synchronize()
    start = time.perf_counter()
    relora.merge_and_reinit()
    reset_optimizer_state(optimizer, relora.factor_parameters(), "magnitude", 0.9)
    synchronize()
    return (time.perf_counter() - start) * 1e3


def memory_estimate_gib(size: str, method: str, rank: int, batch: int, seq_len: int, vocab: int) -> float:
    """``hf_pept.memory.estimate`` of this run (pure bf16: weights, gradients, state and activations) in GiB."""
    from hf_pept.memory import estimate

    method_name = "galore" if method.startswith("galore") else method
    result = estimate(
        method_name,
        model=size,
        vocab_size=vocab,
        seq_len=seq_len,
        batch_size=batch,
        rank=rank,
        precision="bf16",
        weight_dtype="bf16",
    )
    return result.total / 2**30


def run_one(size: str, method: str, args) -> dict[str, object] | None:
    rank = RANKS[size]
    if method == "galore-reference":
        os.environ["HF_PEPT_DISABLE_KERNELS"] = "1"
    else:
        os.environ.pop("HF_PEPT_DISABLE_KERNELS", None)
    model = build_model(size, args.vocab_size, args.seq_len)
    model, optimizer, _ = make_optimizer(method, model, rank, args)
    if optimizer is None:
        print(f"{size} {method}: skipped (galore-torch not installed)", flush=True)
        return None
    model.train()
    generator = torch.Generator(device=DEVICE).manual_seed(0)
    batch = torch.randint(0, args.vocab_size, (args.batch_size, args.seq_len), device=DEVICE, generator=generator)
    warm = train_steps(model, optimizer, batch, args.warmup_steps)
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timed = train_steps(model, optimizer, batch, args.steps)
    peak = torch.cuda.max_memory_allocated() / 2**30 if DEVICE.type == "cuda" else float("nan")
    step_s = sorted(timed)[len(timed) // 2]
    tokens = args.batch_size * args.seq_len
    row: dict[str, object] = {
        "size": size,
        "method": method,
        "rank": rank if method != "full" else "",
        "tokens_per_step": tokens,
        "step_ms": round(step_s * 1e3, 2),
        "tokens_per_s": round(tokens / step_s),
        "peak_gib": round(peak, 2),
        "estimate_gib": "",
        "peak_vs_estimate": "",
        "periodic_ms": "",
        "periodic_every": "",
        "tokens_per_s_amortised": round(tokens / step_s),
    }
    estimate = memory_estimate_gib(size, method, rank, args.batch_size, args.seq_len, args.vocab_size)
    row["estimate_gib"] = round(estimate, 2)
    row["peak_vs_estimate"] = round(peak / estimate, 3)
    periodic_ms = None
    if method in ("galore", "galore-reference"):
        periodic_ms, every = max(warm[0] - step_s, 0.0) * 1e3, args.update_proj_gap  # first step = the refresh
    elif method == "relora":
        periodic_ms, every = relora_restart_ms(model, optimizer), args.relora_steps
    if periodic_ms is not None:
        row["periodic_ms"] = round(periodic_ms, 1)
        row["periodic_every"] = every
        row["tokens_per_s_amortised"] = round(tokens / (step_s + periodic_ms / 1e3 / every))
    del model, optimizer, batch
    gc.collect()
    if DEVICE.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["60m", "350m", "1b"], choices=list(RANKS))
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--vocab-size", type=int, default=32000, help="the papers' T5 vocabulary size")
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--update-proj-gap", type=int, default=200)
    parser.add_argument("--relora-steps", type=int, default=1000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument(
        "--device", default="cuda", help="cuda (the measurement) or cpu (a smoke run with --sizes tiny)"
    )
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    if DEVICE.type == "cuda" and not torch.cuda.is_available():
        print("training_throughput.py needs a CUDA device (or --device cpu for a smoke run)", file=sys.stderr)
        return 1
    env = environment()
    print(" | ".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    rows = []
    for size in args.sizes:
        for method in args.methods:
            try:
                row = run_one(size, method, args)
            except torch.cuda.OutOfMemoryError as error:
                print(f"{size} {method}: out of memory ({error})", flush=True)
                row = None
                gc.collect()
                torch.cuda.empty_cache()
            if row is None:
                continue
            full = next((r for r in rows if r["size"] == size and r["method"] == "full"), None)
            row["vs_full"] = "" if full is None else round(row["tokens_per_s_amortised"] / full["tokens_per_s"], 3)
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    os.environ.pop("HF_PEPT_DISABLE_KERNELS", None)
    if not rows:
        print("no method ran")
        return 1
    path = os.path.join(args.out, f"training_throughput_{device_slug(env)}.csv")
    write_csv(path, env, rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
