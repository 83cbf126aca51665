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

from ..fsdp import is_dtensor, local
from ..kernels.galore_update import adam_lowrank_update, lowrank_weight_update_
from . import batched, sharded
from .config import GaLoreConfig
from .fira import fira_residual
from .layerwise import LayerwiseStepper
from .projector import FULL, compute_projectors, project, projection_side

PROJECTOR_EVENT = "projector_update"
# How many distinct shapes a message about unprojected weights lists.
_SHAPES_SHOWN = 5


class GaLoreOptimizer(torch.optim.Optimizer):
    """Base of the GaLore optimizers: param-group validation, projection state, events and layer-wise mode.

    Subclasses implement :meth:`_full_rank_update` (a list of ordinary parameters of one group) and
    :meth:`_lowrank_update` (the base optimizer on the projected gradient R of one weight, returning the update
    that is back-projected).

    :meth:`step` updates every parameter that has a gradient. A loop that updates parameters one at a time (the
    layer-wise hooks of :mod:`hf_pept.galore.layerwise`, or a user's own) calls :meth:`step_parameter` for each and
    :meth:`finish_parameter_steps` once per step instead; the result is the same.

    Args:
        params: parameters or param groups; a group with a ``rank`` key is projected, with the knobs of
            :class:`~hf_pept.galore.config.GaLoreConfig` (missing ones take its defaults). A projected group must
            hold at least one 2-D weight whose smaller side exceeds its rank (else ``ValueError``).
        defaults: the base optimizer's defaults (lr, betas, ...).
        layerwise: update each parameter inside its post-accumulate-grad hook and free its gradient right away
            (see :mod:`hf_pept.galore.layerwise`); :meth:`step` then only closes the step.
    """

    # Whether the low-rank update N is an Adam-style ψ(R) that Fira's norm-based scaling can use.
    supports_fira = True
    # Whether FSDP2-sharded (DTensor) weights can be stepped on their local rows (hf_pept.galore.sharded), and which
    # per-weight state tensors then hold one row per row of the weight's projected gradient.
    supports_row_sharding = False
    row_state_keys: tuple[str, ...] = ()

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any], *, layerwise: bool = False):
        # add_param_group fills these: torch's __init__ calls it once per group, and users may call it later.
        self._param_index: dict[torch.Tensor, int] = {}  # position in the optimizer: seeds the randomized sketch
        self._group_index: dict[torch.Tensor, int] = {}  # param group, by index (load_state_dict replaces the dicts)
        self._constructing = True
        self._unprojected_at_construction: list[tuple[int, ...]] = []
        self._layerwise: LayerwiseStepper | None = None
        self._events: list[dict[str, Any]] = []
        self._pending_refreshes: dict[int, int] = {}
        super().__init__(params, defaults)
        self._constructing = False
        self._check_projection(self._unprojected_at_construction)
        self.last_grad_norm: float | None = None
        self.layerwise = bool(layerwise)
        self._layerwise = LayerwiseStepper(self) if self.layerwise else None

    def _check_projection(self, unprojected: list[tuple[int, ...]]) -> None:
        """At construction: a projected optimizer that projects nothing is an error; skipping some weights a warning."""
        projected_groups = [g for g in self.param_groups if g.get("rank") is not None]
        if not projected_groups or not unprojected:
            return
        if any(self.is_projected(p, g) for g in projected_groups for p in g["params"]):
            warnings.warn(_unprojected_warning(unprojected), stacklevel=4)
            return
        ranks = sorted({g["rank"] for g in projected_groups})
        at_rank = f"rank={ranks[0]}" if len(ranks) == 1 else f"ranks {ranks}"
        raise ValueError(
            f"GaLore would project no weight at {at_rank}: it projects 2-D weights whose smaller side exceeds the "
            f"rank, and the projected param groups hold only shapes {_shapes_text(unprojected)}. "
            f"{_rank_hint(unprojected)}"
        )

    # ---- param groups -------------------------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group as torch does; a group with ``rank`` is projected (its knobs validated by GaLoreConfig).

        After construction, a projected group none of whose weights can be projected trains full-rank with a
        warning, and a layer-wise optimizer hooks the new parameters too.
        """
        unprojected: list[tuple[int, ...]] = []
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
            unprojected = [tuple(p.shape) for p in params if not self._projectable(p, param_group["rank"])]
        super().add_param_group(param_group)
        new_params = self.param_groups[-1]["params"]
        for p in new_params:
            self._param_index[p] = len(self._param_index)
            self._group_index[p] = len(self.param_groups) - 1
        if self._constructing:
            self._unprojected_at_construction.extend(unprojected)
            return
        if unprojected:
            warnings.warn(_unprojected_warning(unprojected), stacklevel=2)
        if self._layerwise is not None:
            self._layerwise.watch(new_params)

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
        for group in self.param_groups:
            self._update_params(group, [p for p in group["params"] if p.grad is not None])
        self.finish_parameter_steps()
        return loss

    @torch.no_grad()
    def step_parameter(self, p: torch.Tensor) -> None:
        """Update one parameter now from its ``.grad``, as :meth:`step` would (nothing if it has no gradient).

        The update uses the parameter's current param group (learning rate included) and its own state, so calling
        this for every parameter and then :meth:`finish_parameter_steps` equals one :meth:`step`. The gradient is
        left in place; layer-wise GaLore frees it right after (Zhao et al. 2024, §4.3).
        """
        group_index = self._group_index.get(p)
        if group_index is None:
            self._index_params()
            group_index = self._group_index.get(p)
        if group_index is None:
            raise ValueError(
                f"step_parameter got a tensor of shape {tuple(p.shape)} that is in no param group of this optimizer"
            )
        if p.grad is not None:
            self._update_params(self.param_groups[group_index], [p])

    def param_position(self, p: torch.Tensor) -> int:
        """``p``'s position in the optimizer (param groups in order), which seeds its randomized sketch."""
        if p not in self._param_index:
            self._index_params()
        return self._param_index[p]

    def _index_params(self) -> None:
        # accelerate's FSDP2 preparation swaps the tensors in param_groups for their sharded versions after the
        # optimizer was built: the positions stay, the tensors (the dicts' keys) change.
        self._param_index = {p: i for i, p in enumerate(p for g in self.param_groups for p in g["params"])}
        self._group_index = {p: gi for gi, g in enumerate(self.param_groups) for p in g["params"]}

    def note_refresh(self, step: int) -> None:
        """Count one projector refresh at ``step`` for this step's ``projector_update`` event."""
        self._pending_refreshes[step] = self._pending_refreshes.get(step, 0) + 1

    def finish_parameter_steps(self) -> None:
        """Close a step made of :meth:`step_parameter` calls: record its projector refreshes (:meth:`pop_events`)."""
        for step, count in sorted(self._pending_refreshes.items()):
            self._events.append({"event": PROJECTOR_EVENT, "step": step, "num_params": count})
        self._pending_refreshes = {}

    def _update_params(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        if not self.supports_row_sharding and any(is_dtensor(p) for p in params):
            sharded.refuse(self)  # before any parameter is touched
        full_rank = [p for p in params if not self.is_projected(p, group)]
        if full_rank:
            self._full_rank_update(group, full_rank)
        batches: dict[tuple, list[torch.Tensor]] = {}
        row_sharded: list[torch.Tensor] = []
        for p in params:
            if not self.is_projected(p, group):
                continue
            if is_dtensor(p):
                row_sharded.append(p)
                continue
            key = self._batch_key(group, p) if len(params) > 1 else None
            if key is None:
                self._projected_update(group, p)
            else:
                batches.setdefault(key, []).append(p)
        for key, batch in batches.items():
            if len(batch) == 1:
                self._projected_update(group, batch[0])
            else:
                self._batched_projected_update(group, batch, side=key[1])
        if row_sharded:
            sharded.projected_updates(self, group, row_sharded)

    def _batch_key(self, group: dict[str, Any], p: torch.Tensor) -> tuple | None:
        """Weights with the same key take one batched ordinary step (:mod:`hf_pept.galore.batched`); None = this
        weight takes the per-weight path (the reference). Subclasses with a batched step override this."""
        return None

    def _batched_projected_update(self, group: dict[str, Any], params: list[torch.Tensor], side: str) -> None:
        raise NotImplementedError

    def refresh_projectors(
        self, group: dict[str, Any], p: torch.Tensor, grad: torch.Tensor, side: str, step: int
    ) -> tuple[torch.Tensor, ...]:
        """The projectors of weight ``p`` from its whole gradient ``grad`` at ``step`` (SVD or the seeded randomized
        range finder, as the group says), in ``p``'s dtype, and the refresh noted."""
        projectors = compute_projectors(
            grad,
            group["rank"],
            side,
            proj_method=group["proj_method"],
            oversampling=group["oversampling"],
            power_iters=group["power_iters"],
            seed=group["seed"],
            param_index=self.param_position(p),
            step=step,
        )
        self.note_refresh(step)
        return tuple(projector.to(p.dtype) for projector in projectors)

    def _projected_update(self, group: dict[str, Any], p: torch.Tensor) -> None:
        """GaLore Algorithm 1 for one weight: refresh P every T steps, R = PᵀG, base step on R, W update."""
        grad = p.grad
        state = self.state[p]
        side = projection_side(tuple(p.shape), group["proj_type"])
        if not state:
            state["step"] = 0
        step = state["step"]
        if step % group["update_proj_gap"] == 0:
            projectors = self.refresh_projectors(group, p, grad, side, step)
            state["projector"] = projectors[0]
            if side == FULL:
                state["projector_right"] = projectors[1]
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
    FSDP2-sharded (DTensor) weights take the same arithmetic on their local rows (:mod:`hf_pept.galore.sharded`).
    """

    supports_row_sharding = True
    row_state_keys = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        layerwise: bool = False,
        batched: bool | None = None,
    ):
        _check_adam_args(lr, betas, eps, weight_decay)
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay}
        # batched: same-shaped weights take one ordinary step together (hf_pept.galore.batched); False = the
        # per-weight reference path for every weight; None = batched for CUDA weights only (on a GPU the step is
        # bound by launches; on CPU the per-weight path measured faster, its GEMMs need no stacked copies).
        if batched not in (None, True, False):
            raise ValueError(f"batched must be True, False or None (CUDA only), got {batched!r}")
        self.batched = batched
        super().__init__(params, defaults, layerwise=layerwise)

    def _batch_key(self, group, p):
        if self.batched is False or group.get("fira") or (self.batched is None and p.device.type != "cuda"):
            return None
        side = projection_side(tuple(p.shape), group["proj_type"])
        state = self.state[p]
        if side == FULL or "exp_avg" not in state or state["step"] % group["update_proj_gap"] == 0:
            return None  # two-sided, first step, or a projector refresh (an SVD per weight) is due
        projector = state["projector"]
        dtypes = (p.dtype, p.grad.dtype, projector.dtype, state["exp_avg"].dtype)
        return (tuple(p.shape), side, p.device, *dtypes, state["step"])

    def _batched_projected_update(self, group, params, side):
        beta1, beta2 = group["betas"]
        for chunk in batched.chunks(params):
            states = [self.state[p] for p in chunk]
            for state in states:
                state["step"] += 1
            batched.adamw_lowrank_step_(
                chunk,
                [p.grad for p in chunk],
                [state["projector"] for state in states],
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                side=side,
                step=states[0]["step"],
                lr=group["lr"],
                beta1=beta1,
                beta2=beta2,
                eps=group["eps"],
                weight_decay=group["weight_decay"],
                scale=group["scale"],
            )

    def _moments(self, state: dict[str, Any], like: torch.Tensor, dtype: torch.dtype):
        if "exp_avg" not in state:
            state["exp_avg"] = torch.zeros_like(like, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(like, dtype=dtype, memory_format=torch.preserve_format)
        return state["exp_avg"], state["exp_avg_sq"]

    def _full_rank_update(self, group, params):
        # The foreach AdamW of torch.optim.adam._multi_tensor_adam (non-capturable branch), op for op, so the
        # full-rank parameters follow torch.optim.AdamW exactly with one kernel launch per op for all of them.
        # FSDP2-sharded (DTensor) parameters go through their local shards: element-wise, no communication.
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
        for p in params:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
            exp_avg, exp_avg_sq = self._moments(state, p, p.dtype)
            state["step"] += 1
            grads.append(local(p.grad))
            exp_avgs.append(local(exp_avg))
            exp_avg_sqs.append(local(exp_avg_sq))
            steps.append(state["step"])
        params = [local(p) for p in params]
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


def _shapes_text(shapes: list[tuple[int, ...]]) -> str:
    distinct = sorted(set(shapes))
    more = ", ..." if len(distinct) > _SHAPES_SHOWN else ""
    return "[" + ", ".join(str(s) for s in distinct[:_SHAPES_SHOWN]) + more + "]"


def _unprojected_warning(shapes: list[tuple[int, ...]]) -> str:
    return (
        f"GaLore: {len(shapes)} parameter(s) in projected groups are not 2-D or have a side <= rank (shapes "
        f"{_shapes_text(shapes)}); they train full-rank."
    )


def _rank_hint(shapes: list[tuple[int, ...]]) -> str:
    """A rank that projects every matrix among ``shapes``: the largest power of two below their smallest side."""
    sides = [min(s) for s in shapes if len(s) == 2 and min(s) > 1]
    if not sides:
        return (
            "None of them is a matrix GaLore can project: put the 2-D weights (attention and MLP projections) in the "
            "group with `rank`, and biases and norms in a group without it."
        )
    smallest = min(sides)
    suggestion = 1 << ((smallest - 1).bit_length() - 1)
    return f"Use a rank below the smallest side, {smallest}: e.g. rank={suggestion}."
