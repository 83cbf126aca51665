"""Merging a LoRA update into its base weight, ReLoRA's merge step.

LoRA (Hu et al. 2021, arXiv 2106.09685, eq. 3) adapts ``h = W₀x + (α/r)·B A x``; ReLoRA (Lialin et al. 2023,
arXiv 2307.05695, eq. 2) folds the update into the base weight at every restart:

    W ← W + s · B A,        s = α / r,   W: out×in,   B: out×r,   A: r×in

Contract of ``merge_lora_(weight, lora_A, lora_B, scaling) -> None`` (the Triton kernel in
``lora_merge_triton.py`` implements the same one):

* in place on ``weight`` (same storage, so optimizers and hooks keep referring to it);
* the product B A is accumulated in fp32 and added to W with a single rounding to ``weight.dtype``:
  fp32 weights take one ``addmm_``; bf16/fp16 weights are computed in an fp32 copy and rounded once;
* ``lora_A``/``lora_B`` may have any floating dtype (upcast to fp32 for the product); the factors are not changed.
"""

from __future__ import annotations

import torch

from .dispatch import kernels_enabled, triton_op


def _check_shapes(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor) -> None:
    if weight.dim() != 2 or lora_A.dim() != 2 or lora_B.dim() != 2:
        raise ValueError(
            f"merge_lora_ needs 2-D tensors, got weight {tuple(weight.shape)}, "
            f"lora_A {tuple(lora_A.shape)}, lora_B {tuple(lora_B.shape)}"
        )
    out_features, in_features = weight.shape
    if lora_B.shape[0] != out_features or lora_A.shape[1] != in_features or lora_B.shape[1] != lora_A.shape[0]:
        raise ValueError(
            f"shapes do not chain: weight {tuple(weight.shape)} needs lora_B (out×r) {tuple(lora_B.shape)} "
            f"and lora_A (r×in) {tuple(lora_A.shape)}"
        )


def merge_lora_reference(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> None:
    """W ← W + scaling · B A in place, fp32 accumulation, one rounding to ``weight.dtype``."""
    _check_shapes(weight, lora_A, lora_B)
    if weight.dtype == torch.float32:
        weight.addmm_(lora_B.float(), lora_A.float(), alpha=scaling)
        return
    merged = weight.float().addmm_(lora_B.float(), lora_A.float(), alpha=scaling)
    weight.copy_(merged)


def merge_lora_(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> None:
    """Dispatching entry point of :func:`merge_lora_reference` (same contract)."""
    launcher = triton_op("lora_merge_triton", "merge_lora_triton") if kernels_enabled(weight) else None
    if launcher is not None:
        _check_shapes(weight, lora_A, lora_B)
        return launcher(weight, lora_A, lora_B, scaling)
    return merge_lora_reference(weight, lora_A, lora_B, scaling)
