"""Micro-benchmarks of hf-pept's Triton kernels against their PyTorch references, on LLaMA 60M/350M/1B shapes.

Prints one table (median times from CUDA events, ratios from the same run) and writes a CSV to
``benchmarks/results/kernels_gpu_<device>.csv`` (or ``--out``) headed by device, torch/triton versions and date.

Rows: device ceilings (copy bandwidth, bf16 GEMM rate); the fused low-rank Adam update vs the reference; the
back-projection W ← (1 − ηλ)W − ηα·P N as the Triton GEMM-with-epilogue vs ``weight.addmm_`` (cuBLAS), left and
right, bf16 and fp32 weights; the randomized range finder vs ``torch.linalg.svd``; magnitude pruning (radix select)
vs the ``kthvalue`` reference; the LoRA merge vs the reference.

Usage: ``python benchmarks/kernels_gpu.py [--out DIR] [--quick]`` (CUDA only).
"""

# ruff: noqa: B023  (every closure below is timed right where it is made)
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from bench_utils import (
    device_slug,
    environment,
    llama_matrices,
    load_galore_torch_adamw,
    prefill_galore_torch_projectors,
    write_csv,
)

# (name, hidden, intermediate, GaLore rank of the GaLore paper's runs at that size)
SHAPES = (("60m", 512, 1376, 128), ("350m", 1024, 2736, 256), ("1b", 2048, 5461, 512))


def bench_ms(fn, *, rotate: int = 1) -> float:
    """Median milliseconds per call (CUDA events via triton.testing.do_bench); ``fn(i)`` gets a rotating index so
    that callers can cycle through input copies larger than L2."""
    import triton.testing

    counter = [0]

    def call():
        fn(counter[0] % rotate)
        counter[0] += 1

    return triton.testing.do_bench(call, warmup=25, rep=200, return_mode="median")


class Table:
    def __init__(self):
        self.rows: list[dict[str, object]] = []

    def add(self, section, case, variant, ms, baseline_ms=None, note=""):
        ratio = "" if baseline_ms is None else f"{baseline_ms / ms:.2f}"
        self.rows.append(
            {
                "section": section,
                "case": case,
                "variant": variant,
                "ms": f"{ms:.4f}",
                "speedup_vs_ref": ratio,
                "note": note,
            }
        )
        print(f"{section:<18} {case:<34} {variant:<26} {ms:10.4f} ms  {ratio:>6}  {note}", flush=True)


def ceilings(table: Table) -> None:
    n = 1 << 28
    src = torch.empty(n, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms = bench_ms(lambda i: dst.copy_(src))
    table.add("ceiling", "copy 1 GiB fp32", "torch copy_", ms, note=f"{2 * 4 * n / ms / 1e6:.0f} GB/s read+write")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    ms = bench_ms(lambda i: a @ b)
    table.add("ceiling", "bf16 GEMM 8192^3", "cuBLAS", ms, note=f"{2 * 8192**3 / ms / 1e9:.0f} TFLOP/s")


def adam_update(table: Table, shapes) -> None:
    from hf_pept.kernels.galore_update import adam_lowrank_update_reference
    from hf_pept.kernels.galore_update_triton import adam_lowrank_update_triton

    for name, _hidden, inter, rank in shapes:
        shape = (rank, inter)  # the up/gate projections' low-rank gradient (r × d_ff): the largest R per layer
        R = torch.randn(shape, device="cuda")
        m = torch.zeros(shape, device="cuda")
        v = torch.zeros(shape, device="cuda")
        kwargs = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "step": 10}
        ref = bench_ms(lambda i: adam_lowrank_update_reference(R, m, v, **kwargs))
        fused = bench_ms(lambda i: adam_lowrank_update_triton(R, m, v, **kwargs))
        bytes_moved = R.numel() * 4 * 6  # read R, M, V; write M, V, N
        case = f"{name} R {shape[0]}x{shape[1]} fp32"
        table.add("adam_lowrank", case, "reference (torch ops)", ref)
        table.add("adam_lowrank", case, "triton fused", fused, ref, f"{bytes_moved / fused / 1e6:.0f} GB/s")


def weight_update(table: Table, shapes) -> None:
    from hf_pept.kernels.galore_update import lowrank_weight_update_reference
    from hf_pept.kernels.galore_update_triton import lowrank_weight_update_triton

    for name, hidden, inter, rank in shapes:
        for dtype in (torch.bfloat16, torch.float32):
            for side in ("left", "right"):
                m, n = (hidden, inter) if side == "left" else (inter, hidden)  # projected on the smaller side
                weights = [torch.randn(m, n, device="cuda", dtype=dtype) for _ in range(4)]
                projector = torch.randn(m if side == "left" else n, rank, device="cuda", dtype=dtype)
                update = torch.randn((rank, n) if side == "left" else (m, rank), device="cuda")
                kwargs = {"lr": 1e-3, "scale": 0.25, "weight_decay": 0.1, "side": side}
                ref = bench_ms(
                    lambda i: lowrank_weight_update_reference(weights[i], projector, update, **kwargs), rotate=4
                )
                tri = bench_ms(
                    lambda i: lowrank_weight_update_triton(weights[i], projector, update, **kwargs), rotate=4
                )
                flops = 2 * m * n * rank
                case = f"{name} W {m}x{n} r{rank} {str(dtype)[6:]} {side}"
                table.add(
                    "weight_update", case, "cuBLAS addmm_ (reference)", ref, note=f"{flops / ref / 1e9:.0f} TFLOP/s"
                )
                table.add("weight_update", case, "triton GEMM+epilogue", tri, ref, f"{flops / tri / 1e9:.0f} TFLOP/s")


def range_finder(table: Table, shapes) -> None:
    from hf_pept.kernels.range_finder import randomized_range_finder

    for name, hidden, inter, rank in shapes:
        for m, n in ((hidden, hidden), (hidden, inter)):
            grad = torch.randn(m, n, device="cuda", dtype=torch.bfloat16)
            svd = bench_ms(lambda i: torch.linalg.svd(grad.float(), full_matrices=False))
            case = f"{name} G {m}x{n} r{rank}"
            table.add("projector", case, "torch.linalg.svd fp32", svd)
            for power_iters in (1, 2):
                generator = torch.Generator().manual_seed(0)
                ms = bench_ms(
                    lambda i: randomized_range_finder(
                        grad, rank, oversample=8, power_iters=power_iters, generator=generator, side="left"
                    )
                )
                table.add("projector", case, f"randomized q={power_iters} p=8", ms, svd)


def optimizer_step(table: Table, shapes) -> None:
    """The whole optimizer step of a LLaMA (bf16 weights and grads; 32k-vocabulary embeddings, LM head and norms
    trained by plain AdamW inside the GaLore optimizer, as in a Trainer run). Ordinary steps (median) and, for our
    GaLoreAdamW, one projector-refresh step with the randomized range finder."""
    import hf_pept

    layers = {"60m": 8, "350m": 24, "1b": 24}
    for name, hidden, inter, rank in shapes:
        generator = torch.Generator(device="cuda").manual_seed(0)

        def make(shape):
            p = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator) * 0.02
            p.grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16, generator=generator) * 1e-3
            return p

        projected = [make(shape) for shape in llama_matrices(hidden, inter, layers[name])]
        regular = [make((32000, hidden)), make((32000, hidden))] + [
            make((hidden,)) for _ in range(2 * layers[name] + 1)
        ]
        case = f"{name} {len(projected)} projected r{rank} bf16"
        adamw = torch.optim.AdamW(projected + regular, lr=1e-3, weight_decay=0.1, fused=True)
        base = bench_ms(lambda i: adamw.step())
        table.add("optimizer_step", case, "torch AdamW fused", base)
        adamw = None
        torch.cuda.empty_cache()
        knobs = {"rank": rank, "update_proj_gap": 10**9, "scale": 0.25, "proj_type": "std"}
        groups = [{"params": regular}, {"params": projected, **knobs, "proj_method": "randomized"}]
        for variant, disable in (("GaLoreAdamW triton", "0"), ("GaLoreAdamW reference", "1")):
            os.environ["HF_PEPT_DISABLE_KERNELS"] = disable
            optimizer = hf_pept.GaLoreAdamW([dict(g) for g in groups], lr=1e-3, weight_decay=0.1)
            torch.cuda.synchronize()
            start = time.perf_counter()
            optimizer.step()  # the first step refreshes every projector
            torch.cuda.synchronize()
            refresh = (time.perf_counter() - start) * 1e3
            ms = bench_ms(lambda i: optimizer.step())
            table.add("optimizer_step", case, variant, ms, note=f"{ms / base:.2f}x torch fused AdamW")
            table.add(
                "optimizer_step",
                case,
                f"{variant} refresh step",
                refresh,
                note=f"randomized q=2 p=8; amortised over 200 steps: {(refresh - ms) / 200 / ms * 100:.1f}% of a step",
            )
            optimizer = None
            torch.cuda.empty_cache()
        os.environ.pop("HF_PEPT_DISABLE_KERNELS", None)
        galore_torch_adamw = load_galore_torch_adamw()
        if galore_torch_adamw is not None:
            baseline = galore_torch_adamw(
                [{"params": regular}, {"params": projected, **knobs}],
                lr=1e-3,
                weight_decay=0.1,
                no_deprecation_warning=True,
            )
            prefill_galore_torch_projectors(baseline, projected, rank, 10**9)
            ms = bench_ms(lambda i: baseline.step())
            table.add("optimizer_step", case, "galore-torch AdamW", ms, note=f"{ms / base:.2f}x torch fused AdamW")
            baseline = None
            torch.cuda.empty_cache()


def profile_step(table: Table, shapes) -> None:
    """Where a GaLore step's time goes: GPU kernel time vs wall time over 5 ordinary steps (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    import hf_pept

    name, hidden, inter, rank = shapes[-1]
    layers = {"60m": 8, "350m": 24, "1b": 24}[name]
    params = []
    for shape in llama_matrices(hidden, inter, layers):
        p = torch.randn(shape, device="cuda", dtype=torch.bfloat16) * 0.02
        p.grad = torch.randn(shape, device="cuda", dtype=torch.bfloat16) * 1e-3
        params.append(p)
    group = {"params": params, "rank": rank, "update_proj_gap": 10**9, "scale": 0.25, "proj_method": "randomized"}
    optimizer = hf_pept.GaLoreAdamW([group], lr=1e-3, weight_decay=0.1)
    optimizer.step()
    optimizer.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(5):
            optimizer.step()
        end.record()
        torch.cuda.synchronize()
    wall = start.elapsed_time(end) / 5
    events = prof.key_averages()
    # Kernel rows only (device_type CUDA): the aten rows repeat their kernels' device time.
    cuda = torch.autograd.DeviceType.CUDA
    gpu_us = sum(e.self_device_time_total for e in events if e.device_type == cuda) / 5
    host_us = sum(e.self_cpu_time_total for e in events if e.key.startswith("Optimizer.")) / 5
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cuLaunchKernelEx")) / 5
    print(events.table(sort_by="self_cpu_time_total", row_limit=14), flush=True)
    note = (
        f"under the profiler: {wall:.2f} ms/step wall, GPU kernels {gpu_us / 1e3:.2f} ms/step, optimizer Python (self) "
        f"{host_us / 1e3:.2f} ms/step, {launches:.0f} launches/step, {len(params)} matrices"
    )
    table.add("profile", f"{name} GaLoreAdamW step", "triton (default dispatch)", wall, note=note)


def magnitude_prune(table: Table) -> None:
    from hf_pept.kernels.magnitude_prune import magnitude_prune_reference
    from hf_pept.kernels.magnitude_prune_triton import magnitude_prune_triton

    for numel in (128 * 2048, 128 * 5461 * 4, 1 << 25):
        source = torch.randn(numel, device="cuda")
        work = source.clone()

        def ref(i):
            work.copy_(source)
            magnitude_prune_reference(work, 0.9)

        def tri(i):
            work.copy_(source)
            magnitude_prune_triton(work, 0.9)

        copy = bench_ms(lambda i: work.copy_(source))
        ref_ms = bench_ms(ref) - copy
        tri_ms = bench_ms(tri) - copy
        table.add("magnitude_prune", f"{numel} fp32, p=0.9", "reference (kthvalue)", ref_ms)
        table.add("magnitude_prune", f"{numel} fp32, p=0.9", "triton radix select", tri_ms, ref_ms)


def lora_merge(table: Table, shapes) -> None:
    from hf_pept.kernels.lora_merge import merge_lora_reference
    from hf_pept.kernels.lora_merge_triton import merge_lora_triton

    for name, hidden, inter, _ in shapes:
        rank = 128
        for dtype in (torch.bfloat16, torch.float32):
            weights = [torch.randn(inter, hidden, device="cuda", dtype=dtype) for _ in range(4)]
            lora_A = torch.randn(rank, hidden, device="cuda", dtype=dtype)
            lora_B = torch.randn(inter, rank, device="cuda", dtype=dtype)
            ref = bench_ms(lambda i: merge_lora_reference(weights[i], lora_A, lora_B, 0.25), rotate=4)
            tri = bench_ms(lambda i: merge_lora_triton(weights[i], lora_A, lora_B, 0.25), rotate=4)
            case = f"{name} W {inter}x{hidden} r{rank} {str(dtype)[6:]}"
            table.add("lora_merge", case, "reference", ref)
            table.add("lora_merge", case, "triton GEMM+epilogue", tri, ref)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    parser.add_argument("--quick", action="store_true", help="only the 1B shapes")
    parser.add_argument("--sizes", nargs="+", default=None, help="60m, 350m, 1b (default: all)")
    parser.add_argument("--sections", nargs="+", default=None, help="run only these sections (function names)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("kernels_gpu.py needs a CUDA device", file=sys.stderr)
        return 1
    env = environment()
    print(" | ".join(f"{k}: {v}" for k, v in env.items()), flush=True)
    shapes = SHAPES[-1:] if args.quick else SHAPES
    if args.sizes:
        shapes = [shape for shape in SHAPES if shape[0] in args.sizes]
    table = Table()
    sections = (ceilings, adam_update, weight_update, range_finder, magnitude_prune, lora_merge, optimizer_step)
    sections += (profile_step,)
    if args.sections:
        sections = [section for section in sections if section.__name__ in args.sections]
    for section in sections:
        try:
            section(table) if section in (ceilings, magnitude_prune) else section(table, shapes)
        except Exception as error:  # a failing section must not hide the others' numbers
            print(f"{section.__name__} failed: {type(error).__name__}: {error}", flush=True)
            table.add(section.__name__, "FAILED", type(error).__name__, float("nan"), note=str(error)[:200])
        torch.cuda.empty_cache()
    path = os.path.join(args.out, f"kernels_gpu_{device_slug(env)}.csv")
    write_csv(path, env, table.rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
