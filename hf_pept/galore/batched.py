"""The ordinary GaLore-AdamW step for many same-shaped weights at once: a fixed number of ops per group of weights.

The per-weight step (:meth:`GaLoreOptimizer._projected_update`) issues about 20 small ops per weight; on a GPU the
step is then bound by the host launching them, not by the bytes moved. Weights that share (shape, side, dtypes,
step count) in one param group are stepped here together, GaLore Algorithm 1 (Zhao et al. 2024) unchanged:

    R_i = P_iᵀ G_i  (left)  or  G_i Q_i  (right)              one batched GEMM for the group   (eq. 6)
    M_i, V_i ← Adam moments of R_i                             multi-tensor (foreach) ops
    N_i = (M_i / (1 − β₁ᵗ)) / (sqrt(V_i / (1 − β₂ᵗ)) + ε)      on the stacked moments
    W_i ← (1 − ηλ) W_i − ηα · P_i N_i  (or N_i Q_iᵀ)           one batched GEMM, then multi-tensor ops

Each element goes through the per-weight reference's ops (``hf_pept.kernels.galore_update``) except the last: the
decay and the back-projected update are two multi-tensor ops instead of one fused ``addmm_`` (one more rounding), so
the two agree to rounding (fp32: ≤ 1e-6 relative; the tests hold the per-weight path as the reference). Projector refreshes
(an SVD per weight), Fira's residual and two-sided projection stay on the per-weight path.

Memory: a group stacks its gradients (in the projector's dtype) and its back-projected updates, so it holds two
temporaries of its weights' size; groups are cut into chunks of at most :data:`MAX_BATCH_ELEMENTS` elements.
"""

from __future__ import annotations

import torch

from .projector import LEFT

# Elements (k·m·n) per batched chunk: 2²⁶ = 256 MiB of fp32 per temporary.
MAX_BATCH_ELEMENTS = 2**26


def chunks(params: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``params`` (all one shape) cut so that no chunk exceeds :data:`MAX_BATCH_ELEMENTS` elements."""
    per_chunk = max(1, MAX_BATCH_ELEMENTS // max(1, params[0].numel()))
    return [params[i : i + per_chunk] for i in range(0, len(params), per_chunk)]


@torch.no_grad()
def adamw_lowrank_step_(
    weights: list[torch.Tensor],
    grads: list[torch.Tensor],
    projectors: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    side: str,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    scale: float,
) -> None:
    """One GaLore-AdamW step of same-shaped weights (see the module docstring); ``step`` is t after this step."""
    P = torch.stack(projectors)
    G = torch.stack(grads).to(P.dtype)
    R = torch.bmm(P.transpose(1, 2), G) if side == LEFT else torch.bmm(G, P)
    del G
    Rs = list(R.to(exp_avgs[0].dtype).unbind(0))
    torch._foreach_lerp_(exp_avgs, Rs, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, Rs, Rs, value=1 - beta2)
    del R, Rs
    denom = (torch.stack(exp_avg_sqs).float() / (1 - beta2**step)).sqrt_().add_(eps)
    N = (torch.stack(exp_avgs).float() / (1 - beta1**step)).div_(denom)
    del denom
    Pw, Nw = P.to(weights[0].dtype), N.to(weights[0].dtype)
    update = torch.bmm(Pw, Nw) if side == LEFT else torch.bmm(Nw, Pw.transpose(1, 2))
    if weight_decay != 0:
        torch._foreach_mul_(weights, 1 - lr * weight_decay)
    torch._foreach_add_(weights, list(update.unbind(0)), alpha=-lr * scale)


__all__ = ["MAX_BATCH_ELEMENTS", "adamw_lowrank_step_", "chunks"]
