"""The GaLore optimizer family: one validated base (projection, param groups, state, events, layer-wise mode) and
thin variants per base optimizer.

GaLore (Zhao et al. 2024, arXiv 2403.03507), Algorithm 1: a param group with a ``rank`` entry is *projected*: each
2-D weight W (m×n) whose smaller side exceeds the rank keeps its optimizer moments on R = PᵀG (or GQ), refreshes P
from the SVD of the current gradient every ``update_proj_gap`` steps, and applies W ← W − η(α·P·N + λ·W). All other
parameters (groups without ``rank``, 1-D tensors, small matrices) are updated by the plain base optimizer inside
the same object, exactly as ``torch.optim.AdamW`` would for :class:`GaLoreAdamW`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any

import torch

from ..kernels.galore_update import adam_lowrank_update, lowrank_weight_update_
from .config import GaLoreConfig
from .fira import fira_residual
from .layerwise import LayerwiseStepper
from .projector import FULL, compute_projectors, project, projection_side

PROJECTOR_EVENT = "projector_update"


class GaLoreOptimizer(torch.optim.Optimizer):
    """Base of the GaLore optimizers: param-group validation, projection state, events and layer-wise mode.

    Subclasses implement :meth:`_full_rank_update` (a list of ordinary parameters of one group) and
    :meth:`_lowrank_update` (the base optimizer on the projected gradient R of one weight, returning the update
    that is back-projected).

    Args:
        params: parameters or param groups; a group with a ``rank`` key is projected, with the knobs of
            :class:`~hf_pept.galore.config.GaLoreConfig` (missing ones take its defaults).
        defaults: the base optimizer's defaults (lr, betas, ...).
        layerwise: update each parameter inside its post-accumulate-grad hook and free its gradient right away
            (see :mod:`hf_pept.galore.layerwise`); :meth:`step` then only closes the step.
    """

    # Whether the low-rank update N is an Adam-style ψ(R) that Fira's norm-based scaling can use.
    supports_fira = True

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, layerwise: bool = False):
        self._small_matrices: list[tuple[int, ...]] = []
        super().__init__(params, defaults)
        self._param_index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        self._events: list[dict[str, Any]] = []
        self.last_grad_norm: float | None = None
        self.layerwise = bool(layerwise)
        self._layerwise = LayerwiseStepper(self) if self.layerwise else None
        if self._small_matrices:
            warnings.warn(
                f"GaLore: {len(self._small_matrices)} parameter(s) in projected groups are not 2-D or have a side "
                f"<= rank (shapes {sorted(set(self._small_matrices))[:5]}...); they train full-rank.",
                stacklevel=3,
            )

    # ---- param groups -------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if param_group.get("rank") is not None:
            knobs = GaLoreConfig.knob_names()
            given = {k: param_group[k] for k in knobs if k in param_group}
            param_group.update(GaLoreConfig(**given).to_group())
            if param_group["fira"] and not self.supports_fira:
                raise ValueError(
                    f"fira=True is not available with {type(self).__name__}: Fira scales the residual by the norm of "
                    "an Adam-style update; use GaLoreAdamW or GaLoreAdamW8bit (optim galore_adamw*)"
                )
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            param_group["params"] = params
            self._small_matrices.extend(
                tuple(p.shape) for p in params if not self._projectable(p, param_group["rank"])
            )
        super().add_param_group(param_group)

    @staticmethod
    def _projectable(p: torch.Tensor, rank: int) -> bool:
        return p.dim() == 2 and min(p.shape) > rank

    def is_projected(self, p: torch.Tensor, group: dict[str, Any]) -> bool:
        """Whether ``p`` gets the low-rank update (projected group, 2-D, smaller side > rank)."""
        return group.get("rank") is not None and self._projectable(p, group["rank"])

    # ---- events -------------------------------------------------------------------------------------------
    def pop_events(self) -> list[dict[str, Any]]:
        """Projector refreshes since the last call, as ``{"event": "projector_update", "step", "num_params"}``."""
        events, self._events = self._events, []
        return events

    # ---- stepping -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._layerwise is not None:
            self._layerwise.finish_step()
            return loss
        refreshed: dict[int, int] = {}
        for group in self.param_groups:
            self._update_params(group, [p for p in group["params"] if p.grad is not None], refreshed)
        self._record_refreshes(refreshed)
        return loss

    def _update_params(self, group: dict[str, Any], params: list[torch.Tensor], refreshed: dict[int, int]) -> None:
        full_rank = [p for p in params if not self.is_projected(p, group)]
        if full_rank:
            self._full_rank_update(group, full_rank)
        for p in params:
            if self.is_projected(p, group):
                self._projected_update(group, p, refreshed)

    def _record_refreshes(self, refreshed: dict[int, int]) -> None:
        for step, count in sorted(refreshed.items()):
            self._events.append({"event": PROJECTOR_EVENT, "step": step, "num_params": count})

    def _projected_update(self, group: dict[str, Any], p: torch.Tensor, refreshed: dict[int, int]) -> None:
        """GaLore Algorithm 1 for one weight: refresh P every T steps, R = PᵀG, base step on R, W update."""
        grad = p.grad
        state = self.state[p]
        side = projection_side(tuple(p.shape), group["proj_type"])
        if not state:
            state["step"] = 0
        step = state["step"]
        if step % group["update_proj_gap"] == 0:
            projectors = compute_projectors(
                grad,
                group["rank"],
                side,
                proj_method=group["proj_method"],
                oversampling=group["oversampling"],
                power_iters=group["power_iters"],
                seed=group["seed"],
                param_index=self._param_index[p],
                step=step,
            )
            state["projector"] = projectors[0].to(p.dtype)
            if side == FULL:
                state["projector_right"] = projectors[1].to(p.dtype)
            refreshed[step] = refreshed.get(step, 0) + 1
        projectors = (state["projector"], state["projector_right"]) if side == FULL else (state["projector"],)
        lowrank_grad = project(grad, projectors, side)
        state["step"] = step + 1
        update = self._lowrank_update(group, state, lowrank_grad, state["step"])
        lr, decay = group["lr"], group["weight_decay"]
        residual = None
        if group.get("fira"):
            residual = fira_residual(grad, lowrank_grad, update, projectors[0], side, state, group["fira_limiter"])
        if side == FULL:
            # α·P·N·Qᵀ = α·P·(N Qᵀ): the r×n factor is small, the m×n product is accumulated into W by one GEMM.
            update = update @ projectors[1].t().float()
            side = "left"
        self._apply_lowrank(p, projectors[0], update, lr=lr, scale=group["scale"], weight_decay=decay, side=side)
        if residual is not None:
            # Fira: W ← W − η·S̃ (the full-rank residual; hf_pept.galore.fira).
            p.add_(residual.to(p.dtype), alpha=-lr)

    def _apply_lowrank(self, p, projector, update, *, lr, scale, weight_decay, side) -> None:
        """W ← (1 − ηλ)W − ηα·P N (left) or − ηα·N Qᵀ (right), GaLore Algorithm 1 with decoupled weight decay."""
        lowrank_weight_update_(p, projector, update, lr=lr, scale=scale, weight_decay=weight_decay, side=side)

    def _full_rank_update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        raise NotImplementedError

    def _lowrank_update(self, group, state, lowrank_grad, step) -> torch.Tensor:
        raise NotImplementedError

    # ---- checkpoints --------------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as torch does, then put back the saved dtypes (torch casts every state tensor to the parameter's
        dtype, which would turn 8-bit codes into floats and round fp32 quantization scales)."""
        saved_state = state_dict["state"]
        saved_ids = [pid for g in state_dict["param_groups"] for pid in g["params"]]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for pid, p in zip(saved_ids, params):
            for key, value in saved_state.get(pid, {}).items():
                if isinstance(value, torch.Tensor) and key != "step":
                    self.state[p][key] = value.to(device=p.device)


class GaLoreAdamW(GaLoreOptimizer):
    """AdamW with GaLore projection (Zhao et al. 2024, Algorithm 1; Loshchilov & Hutter 2019 for decoupled decay).

    Projected weights: M, V on R; N = M̂ / (sqrt(V̂) + ε) (torch.optim.AdamW's ε placement); W ← W − η(α·P·N + λW).
    Other parameters: bit-for-bit the ``torch.optim.AdamW`` foreach update.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        layerwise: bool = False,
    ):
        _check_adam_args(lr, betas, eps, weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        super().__init__(params, defaults, layerwise=layerwise)

    def _moments(self, state: dict[str, Any], like: torch.Tensor, dtype: torch.dtype):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(like, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(like, dtype=dtype, memory_format=torch.preserve_format)
        return state["exp_avg"], state["exp_avg_sq"]

    def _full_rank_update(self, group, params):
        # The foreach AdamW of torch.optim.adam._multi_tensor_adam (non-capturable branch), op for op, so the
        # full-rank parameters follow torch.optim.AdamW exactly with one kernel launch per op for all of them.
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
            exp_avg, exp_avg_sq = self._moments(state, p, p.dtype)
            state["step"] += 1
            grads.append(p.grad)
            exp_avgs.append(exp_avg)
            exp_avg_sqs.append(exp_avg_sq)
            steps.append(state["step"])
        if decay != 0:
            torch._foreach_mul_(params, 1 - lr * decay)
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1 - beta2)
        step_size = [(lr / (1 - beta1**step)) * -1 for step in steps]
        bias_correction2_sqrt = [(1 - beta2**step) ** 0.5 for step in steps]
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, eps)
        torch._foreach_addcdiv_(params, exp_avgs, denom, step_size)

    def _lowrank_update(self, group, state, lowrank_grad, step):
        beta1, beta2 = group["betas"]
        exp_avg, exp_avg_sq = self._moments(state, lowrank_grad, state["projector"].dtype)
        return adam_lowrank_update(
            lowrank_grad, exp_avg, exp_avg_sq, beta1=beta1, beta2=beta2, eps=group["eps"], step=step
        )


def _check_adam_args(lr, betas, eps, weight_decay) -> None:
    if not lr >= 0:
        raise ValueError(f"Invalid learning rate {lr!r}: must be >= 0")
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ValueError(f"Invalid betas {betas!r}: need two values in [0, 1)")
    if not eps >= 0:
        raise ValueError(f"Invalid eps {eps!r}: must be >= 0")
    if not weight_decay >= 0:
        raise ValueError(f"Invalid weight_decay {weight_decay!r}: must be >= 0")
