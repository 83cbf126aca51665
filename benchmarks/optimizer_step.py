"""Optimizer step time and optimizer-state bytes: torch AdamW vs our GaLore variants vs galore-torch.

``galore_adamw`` is the default (batched ordinary step on CUDA, per weight on CPU); ``galore_adamw_batched`` forces
the batched step (:mod:`hf_pept.galore.batched`, ``batched=True``), ``galore_adamw_per_weight`` the per-weight path
(``batched=False``); all timed side by side.

Parameters and gradients of a LLaMA of the given shape are built directly (no forward/backward): the attention and
MLP weights are projected (``optim_target_modules=[".*attn.*", ".*mlp.*"]``), embeddings, norms and the LM head train
full-rank, as in a Trainer run. Two rows per optimizer: an *ordinary* step (projector kept) and a *refresh* step
(projector recomputed from the gradient, every ``update_proj_gap`` steps). Steps of all optimizers are timed
round-robin in one run, so machine load hits them alike, and ratios are taken against torch AdamW of the same run.

State bytes are measured (every tensor in ``optimizer.state``; galore-torch's projector object included) and
compared with the closed form: an m×n weight projected on its smaller side s = min(m, n), larger side l:
s·r projector + 2·r·l moments (AdamW), 1-byte moments + fp32 block scales (8-bit), r + l factored second moment
(Adafactor); full-rank parameters 2·numel (AdamW) or the Adafactor factors.

    python benchmarks/optimizer_step.py                    # CPU, the "small" shape, rank 64
    python benchmarks/optimizer_step.py --device cuda      # 60m, 350m, 1b shapes
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_utils import device_slug, environment, load_galore_torch_adamw, write_csv  # noqa: E402

from hf_pept.galore import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit  # noqa: E402
from hf_pept.galore.adamw8bit import BLOCKSIZE, bitsandbytes_available  # noqa: E402

# hidden, intermediate, layers, vocab (GaLore paper Table 2 shapes for 60m/350m/1b)
SHAPES = {
    "small": (256, 688, 4, 8192),
    "60m": (512, 1376, 8, 32000),
    "350m": (1024, 2736, 24, 32000),
    "1b": (2048, 5461, 24, 32000),
}


def llama_parameters(shape: str, device: str, dtype: torch.dtype, grads=None):
    """(projected weights, full-rank parameters) of a LLaMA ``shape`` with random gradients (``grads``: reuse the
    gradient tensors of another copy, which no optimizer here writes to)."""
    hidden, inter, layers, vocab = SHAPES[shape]
    projected = [(hidden, hidden)] * 4 * layers + [(inter, hidden)] * 2 * layers + [(hidden, inter)] * layers
    full = [(vocab, hidden), (vocab, hidden)] + [(hidden,)] * (2 * layers + 1)
    generator = torch.Generator().manual_seed(0)

    def make(shapes, given):
        params = []
        for i, s in enumerate(shapes):
            p = torch.nn.Parameter(torch.randn(s, generator=generator).to(device, dtype) * 0.02)
            p.grad = given[i].grad if given else torch.randn(s, generator=generator).to(device, dtype)
            params.append(p)
        return params

    return make(projected, grads[0] if grads else None), make(full, grads[1] if grads else None)


def state_bytes(optimizer) -> int:
    total = 0
    for state in optimizer.state.values():
        for key, value in state.items():
            if key == "step":  # a scalar counter, not part of the closed form
                continue
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
            elif hasattr(value, "ortho_matrix"):  # galore-torch keeps its projector in a Python object
                matrices = value.ortho_matrix if isinstance(value.ortho_matrix, list) else [value.ortho_matrix]
                total += sum(m.numel() * m.element_size() for m in matrices if m is not None)
    return total


def closed_form_bytes(variant: str, projected, full, rank: int, quantized: bool) -> int:
    """The formula of the module docstring, in the state dtype (the parameters' dtype)."""
    if variant in ("galore-torch", "galore_adamw_batched", "galore_adamw_per_weight"):
        variant = "galore_adamw"
    size = projected[0].element_size()
    total = 0
    for p in full:
        if variant == "galore_adafactor":
            total += size * (sum(p.shape) if p.dim() == 2 else p.numel())
        else:
            total += 2 * size * p.numel()
    for p in projected:
        small, large = min(p.shape), max(p.shape)
        if variant == "torch_adamw":
            total += 2 * size * p.numel()
            continue
        total += size * small * rank
        if variant == "galore_adamw_8bit" and quantized:
            total += 2 * (rank * large + 4 * math.ceil(rank * large / BLOCKSIZE))
        elif variant == "galore_adafactor":
            total += size * (rank + large)
        else:
            total += 2 * size * rank * large
    return total


def build(variant: str, projected, full, rank: int, gap: int):
    galore_group = {"params": projected, "rank": rank, "update_proj_gap": gap, "scale": 0.25, "proj_type": "std"}
    if variant == "torch_adamw":
        return torch.optim.AdamW(projected + full, lr=1e-4, weight_decay=0.0)
    if variant == "galore_adamw":
        return GaLoreAdamW([galore_group, {"params": full}], lr=1e-4)
    if variant in ("galore_adamw_batched", "galore_adamw_per_weight"):
        batched = variant == "galore_adamw_batched"
        return GaLoreAdamW([galore_group, {"params": full}], lr=1e-4, batched=batched)
    if variant == "galore_adamw_8bit":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return GaLoreAdamW8bit([galore_group, {"params": full}], lr=1e-4)
    if variant == "galore_adafactor":
        return GaLoreAdafactor([galore_group, {"params": full}], lr=1e-4)
    if variant == "galore-torch":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return load_galore_torch_adamw()([galore_group, {"params": full}], lr=1e-4, no_deprecation_warning=True)
    raise ValueError(variant)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(optimizers: dict, device: str, repeats: int) -> dict[str, float]:
    """Median seconds per step of each optimizer, steps interleaved round-robin."""
    times = {name: [] for name in optimizers}
    for _ in range(repeats):
        for name, optimizer in optimizers.items():
            _sync(device)
            start = time.perf_counter()
            optimizer.step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run_shape(shape: str, args, variants: list[str]) -> list[dict]:
    dtype = getattr(torch, args.dtype)
    rows = []
    quantized = bitsandbytes_available()
    results = {}
    kinds = (("ordinary", 10**9),) if args.skip_refresh else (("ordinary", 10**9), ("refresh", 1))
    for kind, gap in kinds:
        optimizers, params = {}, {}
        for variant in variants:
            params[variant] = llama_parameters(shape, args.device, dtype, grads=next(iter(params.values()), None))
            optimizers[variant] = build(variant, *params[variant], args.rank, gap)
        for _ in range(args.warmup):  # the first step allocates state and computes the first projector
            for optimizer in optimizers.values():
                optimizer.step()
        results[kind] = time_steps(
            optimizers, args.device, args.repeats if kind == "ordinary" else args.refresh_repeats
        )
        if kind == "ordinary":
            measured = {v: state_bytes(o) for v, o in optimizers.items()}
            closed = {v: closed_form_bytes(v, *params[v], args.rank, quantized) for v in variants}
        del optimizers, params
    base = results["ordinary"]["torch_adamw"]
    for variant in variants:
        for kind, _ in kinds:
            if variant == "torch_adamw" and kind == "refresh":
                continue
            seconds = results[kind][variant]
            rows.append(
                {
                    "shape": shape,
                    "rank": args.rank,
                    "dtype": args.dtype,
                    "optimizer": variant,
                    "step": kind,
                    "ms_per_step": round(seconds * 1e3, 3),
                    "ratio_vs_torch_adamw": round(seconds / base, 3),
                    "state_MiB": round(measured[variant] / 2**20, 3),
                    "state_bytes": measured[variant],
                    "closed_form_bytes": closed[variant],
                    "state_matches_closed_form": measured[variant] == closed[variant],
                }
            )
    return rows


def print_table(rows: list[dict], env: dict) -> None:
    print(" | ".join(f"{k}: {v}" for k, v in env.items()))
    header = ("shape", "rank", "optimizer", "step", "ms/step", "× AdamW", "state MiB", "= closed form")
    print(
        f"{header[0]:>6} {header[1]:>4} {header[2]:>23} {header[3]:>8} {header[4]:>10} {header[5]:>8} "
        f"{header[6]:>10} {header[7]:>13}"
    )
    for r in rows:
        print(
            f"{r['shape']:>6} {r['rank']:>4} {r['optimizer']:>23} {r['step']:>8} {r['ms_per_step']:>10.2f} "
            f"{r['ratio_vs_torch_adamw']:>8.2f} {r['state_MiB']:>10.2f} {str(r['state_matches_closed_form']):>13}"
        )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--shapes", nargs="+", default=None, choices=list(SHAPES), help="default: small (cpu), 60m 350m 1b (cuda)"
    )
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30, help="timed ordinary steps per optimizer")
    parser.add_argument("--refresh-repeats", type=int, default=5, help="timed refresh steps per optimizer")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--dtype", default=None, choices=["float32", "bfloat16"], help="default float32 (cpu), bfloat16 (cuda)"
    )
    parser.add_argument(
        "--skip-refresh", action="store_true", help="time ordinary steps only (SVDs of big shapes take long)"
    )
    parser.add_argument(
        "--out", default=None, help="CSV path (default benchmarks/results/optimizer_step_<device>_<date>.csv)"
    )
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    args.dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    shapes = args.shapes or (["small"] if args.device == "cpu" else ["60m", "350m", "1b"])
    variants = ["torch_adamw", "galore_adamw", "galore_adamw_batched", "galore_adamw_per_weight"]
    variants += ["galore_adamw_8bit", "galore_adafactor"]
    if load_galore_torch_adamw() is not None:
        variants.append("galore-torch")
    else:
        print("galore-torch not installed: its rows are skipped (pip install galore-torch)")
    env = environment()
    if args.device == "cpu":  # the shared helper names the GPU whenever one exists; this run used the CPU
        env["device"] = f"cpu: {_cpu_name()} ({os.cpu_count()} logical cores)"
    env["threads"] = str(torch.get_num_threads())
    env["bitsandbytes"] = "yes" if bitsandbytes_available() else "no (8-bit variant keeps fp32 moments)"
    rows = []
    for shape in shapes:
        rows += run_shape(shape, args, variants)
    for row in rows:
        row.update(device=env["device"], torch=env["torch"], transformers=env["transformers"], date=env["date"])
    print_table(rows, env)
    date = env["date"].split()[0]
    slug = "cpu" if args.device == "cpu" else device_slug(env)
    out = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", f"optimizer_step_{slug}_{date}.csv"
    )
    write_csv(out, env, rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
