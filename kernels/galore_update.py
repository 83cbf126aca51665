"""The GaLore step after projection: Adam on the low-rank gradient, then back-projection into the weight.

GaLore (Zhao et al. 2024, arXiv 2403.03507), Algorithm 1 with AdamW as the base optimizer. For a weight
W (m×n) with projector P (m×r, ``side="left"``: R = Pᵀ G, r×n) or Q (n×r, ``side="right"``: R = G Q, m×r):

    M_t = β₁ M_{t-1} + (1 − β₁) R_t,     V_t = β₂ V_{t-1} + (1 − β₂) R_t²
    N_t = (M_t / (1 − β₁ᵗ)) / (sqrt(V_t / (1 − β₂ᵗ)) + ε)                          (torch.optim.AdamW's ε placement)
    W  ← W − η (α P N_t + λ W)      (left)        W ← W − η (α N_t Qᵀ + λ W)      (right)

α = ``scale``, η = learning rate, λ = decoupled weight decay. This module holds the PyTorch reference of each
op; the Triton kernels live beside them and the public functions dispatch (see ``dispatch.kernels_enabled``).
"""

from __future__ import annotations

import torch

from .dispatch import kernels_enabled, triton_op


def adam_lowrank_update_reference(
    R: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    step: int,
) -> torch.Tensor:
    """Update the moments M, V in place from the low-rank gradient R and return N_t (fp32, R's shape)."""
    R32 = R.float()
    exp_avg.lerp_(R32.to(exp_avg.dtype), 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(R32.to(exp_avg_sq.dtype), R32.to(exp_avg_sq.dtype), value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    denom = (exp_avg_sq.float() / bias_correction2).sqrt_().add_(eps)
    return (exp_avg.float() / bias_correction1).div_(denom)


def lowrank_weight_update_reference(
    weight: torch.Tensor,
    projector: torch.Tensor,
    update: torch.Tensor,
    *,
    lr: float,
    scale: float,
    weight_decay: float,
    side: str,
) -> None:
    """W ← (1 − ηλ) W − ηα·P N (left) or − ηα·N Qᵀ (right), in place, as one GEMM with W as the accumulator."""
    factor_a, factor_b = (projector, update) if side == "left" else (update, projector.t())
    factor_a = factor_a.to(weight.dtype)
    factor_b = factor_b.to(weight.dtype)
    weight.addmm_(factor_a, factor_b, beta=1 - lr * weight_decay, alpha=-lr * scale)


# Which weight dtypes take the Triton back-projection GEMM instead of ``weight.addmm_``. ``addmm_`` is already one
# cuBLAS GEMM with the β·W epilogue, in place, with no full-size temporary, and on an H100 it was faster than our
# Triton GEMM-with-epilogue at the 350M and 1B LLaMA shapes for both dtypes (0.25–0.83× for bf16, 0.33–1.06× for
# fp32; only the 60M shapes gained ~10 %): see benchmarks/results/kernels_gpu_h100_80gb_hbm3.csv. So no dtype
# takes the Triton kernel today; the kernel stays tested and benchmarked, and a dtype joins this set when a
# measurement shows it faster.
TRITON_WEIGHT_UPDATE_DTYPES: frozenset[torch.dtype] = frozenset()


def adam_lowrank_update(R, exp_avg, exp_avg_sq, *, beta1, beta2, eps, step):
    """Dispatching entry point of :func:`adam_lowrank_update_reference` (same contract)."""
    if kernels_enabled(R):
        launcher = triton_op("galore_update_triton", "adam_lowrank_update_triton")
        if launcher is not None:
            return launcher(R, exp_avg, exp_avg_sq, beta1=beta1, beta2=beta2, eps=eps, step=step)
    return adam_lowrank_update_reference(R, exp_avg, exp_avg_sq, beta1=beta1, beta2=beta2, eps=eps, step=step)


def lowrank_weight_update_(weight, projector, update, *, lr, scale, weight_decay, side):
    """Dispatching entry point of :func:`lowrank_weight_update_reference` (same contract)."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if kernels_enabled(weight) and weight.dtype in TRITON_WEIGHT_UPDATE_DTYPES:
        launcher = triton_op("galore_update_triton", "lowrank_weight_update_triton")
        if launcher is not None:
            return launcher(weight, projector, update, lr=lr, scale=scale, weight_decay=weight_decay, side=side)
    return lowrank_weight_update_reference(
        weight, projector, update, lr=lr, scale=scale, weight_decay=weight_decay, side=side
    )
