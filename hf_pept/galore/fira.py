"""Fira's full-rank residual on top of a GaLore step (Chen et al. 2024, "Fira: Can We Achieve Full-rank Training
of LLMs Under Low-rank Constraint?", arXiv 2410.01623, §4).

GaLore keeps optimizer state only for R = PᵀG (left) or R = GQ (right) and drops the rest of the gradient. Fira
adds that rest back, scaled like the adaptive update of the subspace:

    S_t = φ_t(R_t) ⊙ (G_t − P R_t)                          (left;  right: G_t − R_t Qᵀ)
    φ_t(R_t)_j = ‖ψ_t(R_t)_{:,j}‖ / ‖R_{t,:,j}‖              (norm-based scaling, one factor per column of G;
                                                             per row for the right projection)
    W_{t+1} = W_t − η (α P ψ_t(R_t) + S̃_t)

with ψ_t the base optimizer's update on R (Adam's N = M̂ / (√V̂ + ε)) and S̃_t the residual after the norm-growth
limiter (§4.3): if ‖S_t‖ > γ ‖S̃_{t−1}‖ then S̃_t = S_t · γ ‖S̃_{t−1}‖ / ‖S_t‖, else S̃_t = S_t (γ = 1.01).

The only state is ‖S̃_{t−1}‖, a scalar per weight. The residual is a transient m×n tensor, like the gradient.

Differences from the authors' code (``optimizer_torch/fira_adamw.py``): it subtracts α·P R (not P R) from G, so
with α ≠ 1 part of the in-subspace gradient leaks into the residual; here the residual is the exact complement
G − P R of the paper's equation. ε: 1e-8 in the denominators of φ and of the limiter ratio, as there.
"""

from __future__ import annotations

import torch

from .projector import LEFT, RIGHT

_NORM_EPS = 1e-8
RESIDUAL_NORM_KEY = "fira_residual_norm"


def fira_residual(
    grad: torch.Tensor,
    lowrank_grad: torch.Tensor,
    lowrank_update: torch.Tensor,
    projector: torch.Tensor,
    side: str,
    state: dict,
    limiter: float,
) -> torch.Tensor:
    """S̃_t (fp32, the shape of ``grad``), updating ``state[RESIDUAL_NORM_KEY]`` to ‖S̃_t‖.

    ``lowrank_grad`` is R_t, ``lowrank_update`` ψ_t(R_t), ``projector`` P (m×r, left) or Q (n×r, right).
    """
    residual = fira_scaled_residual(grad, lowrank_grad, lowrank_update, projector, side)
    return fira_limit_(residual, residual.norm(), state, limiter)


def fira_scaled_residual(
    grad: torch.Tensor, lowrank_grad: torch.Tensor, lowrank_update: torch.Tensor, projector: torch.Tensor, side: str
) -> torch.Tensor:
    """S_t = φ_t(R_t) ⊙ (G_t − P R_t) (fp32), before the limiter. For the right projection every row of S_t needs
    only the same row of G, R and ψ(R): a row-sharded gradient gives the rank's rows of S_t without communication."""
    grad = grad.float()
    lowrank_grad = lowrank_grad.float()
    lowrank_update = lowrank_update.float()
    projector = projector.float()
    if side == LEFT:
        residual = grad - projector @ lowrank_grad
        norm_dim = 0  # one factor per column j of G (R and N are r×n)
    elif side == RIGHT:
        residual = grad - lowrank_grad @ projector.t()
        norm_dim = 1  # one factor per row i of G (R and N are m×r)
    else:
        raise ValueError(f"Fira's residual needs a one-sided projection ('left' or 'right'), got side {side!r}")
    scaling = lowrank_update.norm(dim=norm_dim, keepdim=True) / (
        lowrank_grad.norm(dim=norm_dim, keepdim=True) + _NORM_EPS
    )
    residual.mul_(scaling)
    return residual


def fira_limit_(residual: torch.Tensor, norm: torch.Tensor, state: dict, limiter: float) -> torch.Tensor:
    """The norm-growth limiter on S_t in place, given ``norm`` = ‖S_t‖ (of the whole matrix, also when ``residual``
    holds only some of its rows); sets ``state[RESIDUAL_NORM_KEY]`` to ‖S̃_t‖ and returns S̃_t."""
    previous = state.get(RESIDUAL_NORM_KEY)
    if previous is not None:
        ratio = norm / (previous.to(norm.device) + _NORM_EPS)
        shrink = torch.clamp(ratio / limiter, min=1.0)
        residual.div_(shrink)
        norm = norm / shrink
    state[RESIDUAL_NORM_KEY] = norm
    return residual
