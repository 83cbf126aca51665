"""GaLore and Fira on FSDP2-sharded weights: every ordinary step on the rank's own rows, no communication.

FSDP2 (``fully_shard``) holds each weight W (m×n) and its gradient G as DTensors placed ``Shard(0)``: rank i owns a
block of rows Gᵢ (mᵢ×n, Σ mᵢ = m). GaLore's right projection (Zhao et al. 2024, arXiv 2403.03507, eq. 6 with the
projector on the right) keeps that layout:

    R = G Q             Q (n×r) replicated  ⇒  Rᵢ = Gᵢ Q: the rank's rows of R, from its rows of G alone
    M, V ← Adam(R)      element-wise       ⇒  Mᵢ, Vᵢ are the rank's rows of the moments (mᵢ×r)
    W ← (1 − ηλ) W − ηα N Qᵀ               ⇒  Wᵢ ← (1 − ηλ) Wᵢ − ηα Nᵢ Qᵀ

so an ordinary step runs the single-process arithmetic on local tensors (``to_local()``), and the moments are
stored as DTensors of the weight's layout (1/world of the single-process state per rank, plus the replicated
projector n×r). The left projection R = PᵀG contracts over the sharded rows (an all-reduce of r×n per step), so
under FSDP2 every weight is projected on the right, also those (m < n, e.g. ``down_proj``) that ``proj_type="std"``
projects on the left in a single process: no per-step collective, and the moments m×r are the smaller ones for
those weights; the price is a larger replicated projector (n×r instead of m×r). Projections of the same weights
in a single process and under FSDP2 agree when the single process uses ``proj_type="right"``.

Refresh (every ``update_proj_gap`` steps): the projector is computed from the whole gradient, gathered from the
shards (``G.full_tensor()``: one all-gather of m×n per weight), by the single-process code (SVD or the randomized
range finder, seeded by parameter and step), so every rank holds the projector a single process would compute from
the same gradient. GaLore 2 (Su et al. 2025, arXiv 2504.20437) refreshes from distributed statistics instead; the
Gram route, GᵀG = Σᵢ GᵢᵀGᵢ (one all-reduce of n×n) whose top-r eigenvectors are Q, was not chosen:

* the eigenvectors equal SVD's right singular vectors only up to the sign of each column. GaLore keeps the
  moments across a refresh, so a column whose sign differs from the single-process projector turns its moment
  around (the run then follows a different curve); no sign convention reproduces LAPACK's SVD. Measured in one
  process (``benchmarks/fsdp_state_and_collectives.py``, tiny LLaMA, refresh every 3 steps): the SVD's subspace
  with other column signs moves the loss by up to 5.6e-4 relative from the second refresh on, the Gram route in
  fp64 by up to 8.1e-4; the gathered refresh stays within 5e-6 of one process;
* GᵀG squares the condition number: directions with σ below √ε_fp32 · σ_max ≈ 3e-4 σ_max are lost in fp32 (fp64
  would be needed), and the cut between the r-th and (r+1)-th singular values is where GaLore needs precision;
* for wide weights (m < n) the n×n Gram is larger than the m×n gradient itself.

The gather costs, every ``update_proj_gap`` (200) steps, about what FSDP2 already spends on the gradient's
reduce-scatter every step (0.5 % more gradient traffic) and one m×n transient per weight.

Fira (Chen et al. 2024, arXiv 2410.01623, §4): S = φ(R) ⊙ (G − R Qᵀ) with one factor φ per row of G for the right
projection, so Sᵢ needs only the rank's rows. Its norm-growth limiter compares ‖S_t‖ of the whole matrix with
‖S̃_{t−1}‖: the local squared norms of all sharded weights of a param group go into one all-reduce per step (a
vector with one float per weight), the only collective of an ordinary Fira step; the residuals of the step are held
until then (the size of the rank's gradient shards).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..fsdp import check_row_sharded, local, process_group_of, shard_like
from .fira import fira_limit_, fira_scaled_residual
from .projector import RIGHT, project

_SHARDED_PROJ_TYPES = ("std", "right")


def sharded_side(group: dict) -> str:
    """The projection side of a row-sharded weight: always the right one (see the module docstring)."""
    proj_type = group["proj_type"]
    if proj_type not in _SHARDED_PROJ_TYPES:
        raise ValueError(
            f"proj_type={proj_type!r} projects on the left, which contracts over the rows FSDP2 shards (one "
            "all-reduce per weight and step); on sharded (DTensor) weights use proj_type='std' or 'right', both "
            "project on the right"
        )
    return RIGHT


def refuse(optimizer) -> None:
    """The error for an optimizer whose state does not follow row shards (8-bit blocks, Adafactor's factors)."""
    raise ValueError(
        f"{type(optimizer).__name__} does not support FSDP2-sharded (DTensor) parameters; use GaLoreAdamW "
        "(optim='galore_adamw'), whose moments are row-local"
    )


def projected_updates(optimizer, group: dict, params: list[torch.Tensor]) -> None:
    """One GaLore (or GaLore + Fira) step of the row-sharded weights ``params`` of ``group``."""
    if not optimizer.supports_row_sharding:
        refuse(optimizer)
    residuals: dict[object, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for p in params:
        residual = _projected_update(optimizer, group, p)
        if residual is not None:
            residuals.setdefault(p.device_mesh, []).append((p, residual))
    for pairs in residuals.values():
        squares = torch.stack([residual.square().sum() for _, residual in pairs])
        dist.all_reduce(squares, group=process_group_of(pairs[0][0]))
        for (p, residual), square in zip(pairs, squares):
            fira_limit_(residual, square.sqrt(), optimizer.state[p], group["fira_limiter"])
            # Fira: W ← W − η·S̃ (the full-rank residual), on the rank's rows.
            local(p).add_(residual.to(p.dtype), alpha=-group["lr"])


def _projected_update(optimizer, group: dict, p: torch.Tensor) -> torch.Tensor | None:
    """GaLore Algorithm 1 on the rank's rows of one weight; returns Fira's unlimited residual rows (or None)."""
    check_row_sharded(p, "GaLore")
    side = sharded_side(group)
    grad = p.grad
    state = optimizer.state[p]
    if not state:
        state["step"] = 0
    step = state["step"]
    if step % group["update_proj_gap"] == 0:
        # the refresh's one collective: all-gather of the m×n gradient
        (state["projector"],) = optimizer.refresh_projectors(group, p, grad.full_tensor(), side, step)
    projector = state["projector"]
    grad_rows = local(grad)
    lowrank_grad = project(grad_rows, (projector,), side)
    state["step"] = step + 1
    # The base optimizer sees the rank's rows of its moments; new ones are stored in the weight's row layout.
    rows = {key: local(value) for key, value in state.items()}
    update = optimizer._lowrank_update(group, rows, lowrank_grad, state["step"])
    for key in optimizer.row_state_keys:
        if key in rows and key not in state:
            state[key] = shard_like(rows[key], p)
    residual = None
    if group.get("fira"):
        residual = fira_scaled_residual(grad_rows, lowrank_grad, update, projector, side)
    optimizer._apply_lowrank(
        local(p),
        projector,
        update,
        lr=group["lr"],
        scale=group["scale"],
        weight_decay=group["weight_decay"],
        side=side,
    )
    return residual


__all__ = ["projected_updates", "refuse", "sharded_side"]
