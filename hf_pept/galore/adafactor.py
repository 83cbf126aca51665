"""GaLore Adafactor: Adafactor's factored second moment on the projected gradient R.

Adafactor (Shazeer & Stern 2018, arXiv 1804.04235), Algorithm 4 with transformers' ``Adafactor`` semantics for
``scale_parameter=False, relative_step=False, warmup_init=False`` (what the Trainer's ``adafactor`` choice sets):

    β̂₂ₜ = 1 − t^c (c = ``decay_rate``),   U = G² + ε₁
    row: Rₜ = β̂₂ₜ Rₜ₋₁ + (1 − β̂₂ₜ) mean_cols(U),   col: Cₜ = β̂₂ₜ Cₜ₋₁ + (1 − β̂₂ₜ) mean_rows(U)
    V̂ = (Rₜ / mean(Rₜ)) Cₜ,   Û = G / sqrt(V̂),   Û ← Û / max(1, RMS(Û)/d),   Û ← η Û
    optional first moment: M = β₁ M + (1 − β₁) Û, Û = M;   W ← (1 − ηλ) W − Û

For projected weights G is R = PᵀG (or GQ) and the last line becomes W ← (1 − ηλ) W − α·P·Û (GaLore Alg. 1).
"""

from __future__ import annotations

import torch

from ..kernels.galore_update import lowrank_weight_update_
from .optimizer import GaLoreOptimizer


def _rms(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)


def adafactor_direction(grad: torch.Tensor, state: dict, group: dict, step: int) -> torch.Tensor:
    """The Adafactor update Û (already multiplied by η) for ``grad``, updating ``state`` in place (fp32 math)."""
    grad = grad.float()
    eps1, clip_threshold = group["eps"][0], group["clip_threshold"]
    beta2t = 1.0 - step ** group["decay_rate"]
    squared = grad.square().add_(eps1)
    if grad.dim() >= 2:
        row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
        row.mul_(beta2t).add_(squared.mean(dim=-1).to(row.dtype), alpha=1.0 - beta2t)
        col.mul_(beta2t).add_(squared.mean(dim=-2).to(col.dtype), alpha=1.0 - beta2t)
        row32, col32 = row.float(), col.float()
        row_factor = (row32 / row32.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
        col_factor = col32.unsqueeze(-2).rsqrt()
        update = row_factor * col_factor * grad
    else:
        exp_avg_sq = state["exp_avg_sq"]
        exp_avg_sq.mul_(beta2t).add_(squared.to(exp_avg_sq.dtype), alpha=1.0 - beta2t)
        update = exp_avg_sq.float().rsqrt().mul_(grad)
    update.div_((_rms(update) / clip_threshold).clamp_(min=1.0))
    update.mul_(group["lr"])
    if group["beta1"] is not None:
        exp_avg = state["exp_avg"]
        exp_avg.mul_(group["beta1"]).add_(update.to(exp_avg.dtype), alpha=1 - group["beta1"])
        update = exp_avg.float()
    return update


def _init_adafactor_state(state: dict, like: torch.Tensor, dtype: torch.dtype, beta1) -> None:
    if like.dim() >= 2:
        state["exp_avg_sq_row"] = torch.zeros(like.shape[:-1], dtype=dtype, device=like.device)
        state["exp_avg_sq_col"] = torch.zeros(like.shape[:-2] + like.shape[-1:], dtype=dtype, device=like.device)
    else:
        state["exp_avg_sq"] = torch.zeros_like(like, dtype=dtype)
    if beta1 is not None:
        state["exp_avg"] = torch.zeros_like(like, dtype=dtype)


class GaLoreAdafactor(GaLoreOptimizer):
    """Adafactor with GaLore projection; follows ``transformers.Adafactor(scale_parameter=False,
    relative_step=False)`` on full-rank parameters and on the projected gradient R of projected ones.
    """

    supports_fira = False

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = False,
        relative_step: bool = False,
        warmup_init: bool = False,
        *,
        layerwise: bool = False,
    ):
        if lr is None or not lr >= 0:
            raise ValueError(f"GaLoreAdafactor needs an explicit learning rate >= 0, got lr={lr!r}")
        for name, flag in (("scale_parameter", scale_parameter), ("relative_step", relative_step)):
            if flag:
                raise ValueError(
                    f"GaLoreAdafactor supports {name}=False only (as the Trainer's adafactor choice sets); "
                    f"got {name}=True"
                )
        if warmup_init:
            raise ValueError("GaLoreAdafactor supports warmup_init=False only (it needs relative_step=True)")
        if beta1 is not None and not 0.0 <= beta1 < 1.0:
            raise ValueError(f"Invalid beta1 {beta1!r}: None or a value in [0, 1)")
        if not weight_decay >= 0:
            raise ValueError(f"Invalid weight_decay {weight_decay!r}: must be >= 0")
        defaults = {
            "lr": lr,
            "eps": tuple(eps),
            "clip_threshold": clip_threshold,
            "decay_rate": decay_rate,
            "beta1": beta1,
            "weight_decay": weight_decay,
        }
        super().__init__(params, defaults, layerwise=layerwise)

    def _full_rank_update(self, group, params):
        lr, decay = group["lr"], group["weight_decay"]
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                _init_adafactor_state(state, p, p.dtype, group["beta1"])
            state["step"] += 1
            update = adafactor_direction(p.grad, state, group, state["step"])
            if decay != 0:
                p.mul_(1 - decay * lr)
            p.add_(update.to(p.dtype), alpha=-1)

    def _lowrank_update(self, group, state, lowrank_grad, step):
        if "exp_avg_sq_row" not in state and "exp_avg_sq" not in state:
            _init_adafactor_state(state, lowrank_grad, state["projector"].dtype, group["beta1"])
        return adafactor_direction(lowrank_grad, state, group, step)

    def _apply_lowrank(self, p, projector, update, *, lr, scale, weight_decay, side) -> None:
        # Û already carries η, so the back-projection uses unit lr; the decay factor stays (1 − ηλ).
        lowrank_weight_update_(p, projector, update, lr=1.0, scale=scale, weight_decay=lr * weight_decay, side=side)
