"""CoLA, CoLA-M, CR-Net and the same-shape LLaMA side by side: training tokens/s, FLOPs per token, peak memory.

For each size (default 20m and 60m, the papers' shapes at their 32k vocabulary) and each model:

* ``llama``: ``LlamaForCausalLM`` of the size (full-rank);
* ``cola``: ``hf_pept.CoLAForCausalLM`` of the same shape, every attention/MLP linear factorized at r = d/4;
* ``cola-m``: the same CoLA weights with ``cola_m=True`` (only layer inputs and A·x kept for backward);
* ``crnet``: ``hf_pept.CRNetForCausalLM`` of the same shape (layer 1 full-rank, layers 2..L cross-layer low-rank
  residuals at r = d/4), and ``crnet-r`` the same model with ``recompute=True`` (layer inputs, codes X·A and Y every
  8th layer kept; the rest inverted in backward). Chosen with ``--models``; the default is the first three.

On a machine shared with other jobs, use ``--threads 1``: intra-op threads competing with other processes for the
cores make step times swing by several times.

One training step = forward + backward + ``torch.optim.AdamW`` step on a random token batch (throughput does not
depend on the data): fp32 on the CPU (``--device cpu``, the default), bf16 autocast with fp32 weights on a GPU
(``--device cuda``, CUDA-synchronised timing). Each (size, model) runs in a fresh process so that its peak memory is
its own; the processes are interleaved over ``--rounds`` and the medians reported, so a busy machine slows every
model alike.

Columns: ``tokens_per_s`` (median over timed steps and rounds) and ``best_tokens_per_s`` (the fastest step: the
least disturbed by other processes); ``train_gflop_per_token``, the closed form
6·(matmul multiply-adds per token) + 12·L·s·d for attention (QKᵀ and AV, no causal halving), plus for CoLA-M the
recomputation: 2·r(5d + 2f) per layer (the B halves of the seven linears) + 4·s·d (attention forward); for CR-Net
layer 1 is LLaMA's and layers 2..L r(11d + 3f), and ``crnet-r`` adds per layer l ≥ 2 the B halves and the
inversion, 2·2·r(5d + 2f), plus layer 1's forward 2(4d² + 3df), plus 4·s·d per layer;
``achieved_gflops``; ``saved_activations_mb``, the most bytes autograd holds at once for backward over one step,
counted with ``torch.autograd.graph.saved_tensors_hooks`` (releases tracked), next to ``hf_pept.memory.estimate``'s
``estimated_activations_mb``; ``peak_mb``, the process's peak resident memory during the timed steps minus its
resident memory before the model was built (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``) — on a GPU
``torch.cuda.max_memory_allocated`` over the timed steps — next to the estimate's total (weights + gradients +
AdamW state + activations, ``estimated_total_mb``). On a GPU the saved-activation column counts the forward pass
only (the recomputation in backward runs on autograd's device thread, outside the hooks).

Usage: ``python benchmarks/cola_throughput.py [--device cpu] [--sizes 20m 60m] [--batch 4] [--seq 256] [--steps 5]
[--rounds 2] [--threads 1] [--models llama cola cola-m crnet crnet-r]``; on a GPU e.g. ``--device cuda --sizes 60m
350m 1b --batch 16``. Writes ``benchmarks/results/cola_throughput_<device>_<date>.csv`` (and ``.txt``) for the
default models, ``architecture_throughput_<device>_<date>`` for any other choice, and prints the table with the
ratios to LLaMA and to CoLA.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from hf_pept.metrics import peak_saved_activation_bytes

MODELS = ("llama", "cola", "cola-m", "crnet", "crnet-r")
DEFAULT_MODELS = ("llama", "cola", "cola-m")
MB = 2**20


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def train_flops_per_token(config, model: str, seq_len: int) -> float:
    """Closed-form training FLOPs per token (see the module docstring)."""
    d, f, layers, vocab = config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.vocab_size
    attention = 12 * layers * seq_len * d
    if model == "llama":
        return 6 * (layers * (4 * d * d + 3 * d * f) + vocab * d) + attention
    r = config.rank
    if model.startswith("crnet"):
        first = 4 * d * d + 3 * d * f
        flops = 6 * (first + (layers - 1) * r * (11 * d + 3 * f) + vocab * d) + attention
        if model == "crnet-r":
            flops += (layers - 1) * 4 * r * (5 * d + 2 * f) + 2 * first + layers * 4 * seq_len * d
        return flops
    flops = 6 * (layers * r * (11 * d + 3 * f) + vocab * d) + attention
    if model == "cola-m":
        flops += layers * (2 * r * (5 * d + 2 * f) + 4 * seq_len * d)
    return flops


def build(size: str, model: str, vocab_size: int, seq_len: int, device: torch.device):
    from transformers import LlamaForCausalLM

    from hf_pept.models import cola_config, llama_config

    torch.manual_seed(0)
    if model == "llama":
        config = llama_config(size, vocab_size, max_position_embeddings=seq_len)
        with device:
            return LlamaForCausalLM(config), config
    if model.startswith("crnet"):
        from hf_pept.crnet import CRNetForCausalLM
        from hf_pept.models import crnet_config

        config = crnet_config(size, vocab_size, max_position_embeddings=seq_len, recompute=model == "crnet-r")
        with device:
            return CRNetForCausalLM(config), config
    from hf_pept.cola import CoLAForCausalLM

    config = cola_config(size, vocab_size, max_position_embeddings=seq_len, cola_m=model == "cola-m")
    with device:
        return CoLAForCausalLM(config), config


def child(size: str, model: str, args) -> dict:
    """One (size, model) measurement in this process."""
    from hf_pept import memory

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    baseline_kb = _rss_kb("VmRSS")
    net, config = build(size, model, args.vocab_size, args.seq, device)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, fused=cuda)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab_size, (args.batch, args.seq), generator=generator).to(device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = net(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    for _ in range(2):  # warm-up: allocates the AdamW state, settles the allocator and the thread pool
        step()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss_ok = _reset_peak_rss()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated() / MB
    else:
        peak_mb = (_rss_kb("VmHWM") - baseline_kb) / 1024 if rss_ok else float("nan")
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
        saved = peak_saved_activation_bytes(net, ids)
        net.zero_grad(set_to_none=True)
    method = {"llama": "full", "crnet-r": "crnet"}.get(model, model)
    precision = "bf16" if cuda else "fp32"
    estimate = memory.estimate(
        method,
        model=size,
        vocab_size=args.vocab_size,
        seq_len=args.seq,
        batch_size=args.batch,
        precision=precision,
        recompute=model == "crnet-r",
    )
    tokens = args.batch * args.seq
    return {
        "size": size,
        "model": model,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "rank": getattr(config, "rank", ""),
        "step_times_s": times,
        "train_gflop_per_token": train_flops_per_token(config, model, args.seq) / 1e9,
        "tokens_per_step": tokens,
        "saved_activations_mb": saved / MB,
        "estimated_activations_mb": estimate.activations / MB,
        "peak_mb": peak_mb,
        "estimated_total_mb": estimate.total / MB,
    }


def run_child(size: str, model: str, args) -> dict:
    command = [sys.executable, __file__, "--child", size, model, "--vocab_size", str(args.vocab_size)]
    command += ["--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps)]
    command += ["--threads", str(args.threads), "--device", args.device, "--models", *args.models]
    out = subprocess.run(command, capture_output=True, text=True, check=True, env={**os.environ})
    return json.loads(out.stdout.strip().splitlines()[-1])


def environment(threads: int, device: str) -> dict[str, str]:
    import datetime
    import platform

    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = {"gpu": torch.cuda.get_device_name()} if device == "cuda" else {}
    return {
        **gpu,
        "cpu": f"{cpu}, {os.cpu_count()} cores, {threads} threads, load average {load:.1f} at start",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["20m", "60m"])
    parser.add_argument("--vocab_size", type=int, default=32000, help="the papers' T5 vocabulary (default)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process (after two warm-up steps)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every (size, model)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op CPU threads (1: robust on a shared machine)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), choices=MODELS)
    parser.add_argument("--child", nargs=2, metavar=("SIZE", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args)))
        return 0

    env = environment(args.threads, args.device)
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_index in range(args.rounds):
        for size in args.sizes:
            for model in args.models:
                result = run_child(size, model, args)
                runs.setdefault((size, model), []).append(result)
                print(f"round {round_index + 1}: {size} {model}: {result['step_times_s']} s/step", flush=True)

    rows = []
    for (size, model), results in runs.items():
        times = [t for r in results for t in r["step_times_s"]]
        first = results[0]
        tokens_per_s = first["tokens_per_step"] / statistics.median(times)
        best_tokens_per_s = first["tokens_per_step"] / min(times)
        rows.append(
            {
                "size": size,
                "model": model,
                "params_m": round(first["params_m"], 2),
                "rank": first["rank"],
                "tokens_per_s": round(tokens_per_s, 1),
                "best_tokens_per_s": round(best_tokens_per_s, 1),
                "train_gflop_per_token": round(first["train_gflop_per_token"], 4),
                "achieved_gflops": round(tokens_per_s * first["train_gflop_per_token"], 2),
                "saved_activations_mb": round(first["saved_activations_mb"], 1),
                "estimated_activations_mb": round(first["estimated_activations_mb"], 1),
                "peak_mb": round(statistics.median(r["peak_mb"] for r in results), 1),
                "estimated_total_mb": round(first["estimated_total_mb"], 1),
                "timed_steps": len(times),
            }
        )
    by_key = {(row["size"], row["model"]): row for row in rows}
    for row in rows:
        llama = by_key[(row["size"], "llama")] if (row["size"], "llama") in by_key else row
        cola = by_key[(row["size"], "cola")] if (row["size"], "cola") in by_key else row
        row["speed_vs_llama"] = round(row["tokens_per_s"] / llama["tokens_per_s"], 3)
        row["speed_vs_cola"] = round(row["tokens_per_s"] / cola["tokens_per_s"], 3)
        row["best_speed_vs_llama"] = round(row["best_tokens_per_s"] / llama["best_tokens_per_s"], 3)
        row["best_speed_vs_cola"] = round(row["best_tokens_per_s"] / cola["best_tokens_per_s"], 3)
        row["activations_vs_cola"] = round(row["saved_activations_mb"] / cola["saved_activations_mb"], 3)

    header = (
        f"{'size':<5} {'model':<7} {'params M':>8} {'tokens/s':>9} {'×LLaMA':>7} {'×CoLA':>6} {'best':>6} "
        f"{'×LLaMA':>7} {'×CoLA':>6} {'GFLOP/tok':>10} "
        f"{'GFLOP/s':>8} {'saved act MB':>12} {'(est.)':>8} {'×CoLA':>6} {'peak MB':>11} {'(est. total)':>12}"
    )
    precision = "bf16 autocast" if args.device == "cuda" else "fp32"
    peak = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS above the idle process"
    setting = f"batch {args.batch} × {args.seq} tokens, vocabulary {args.vocab_size}, {precision}; peak MB = {peak}"
    lines = [" | ".join(f"{k} {v}" for k, v in env.items()), setting, header]
    for row in rows:
        lines.append(
            f"{row['size']:<5} {row['model']:<7} {row['params_m']:>8.2f} {row['tokens_per_s']:>9.0f} "
            f"{row['speed_vs_llama']:>7.2f} {row['speed_vs_cola']:>6.2f} {row['best_tokens_per_s']:>6.0f} "
            f"{row['best_speed_vs_llama']:>7.2f} {row['best_speed_vs_cola']:>6.2f} {row['train_gflop_per_token']:>10.3f} "
            f"{row['achieved_gflops']:>8.1f} {row['saved_activations_mb']:>12.1f} "
            f"{row['estimated_activations_mb']:>8.1f} {row['activations_vs_cola']:>6.2f} {row['peak_mb']:>11.0f} "
            f"{row['estimated_total_mb']:>12.0f}"
        )
    table = "\n".join(lines)
    print(table)
    os.makedirs(args.out, exist_ok=True)
    name = "cola_throughput" if tuple(args.models) == DEFAULT_MODELS else "architecture_throughput"
    stem = os.path.join(args.out, f"{name}_{args.device}_{env['date'][:10]}")
    import csv

    with open(stem + ".csv", "w", newline="") as handle:
        handle.write("".join(f"# {key}: {value}\n" for key, value in env.items()))
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with open(stem + ".txt", "w") as handle:
        handle.write(table + "\n")
    print(f"wrote {stem}.csv and {stem}.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
