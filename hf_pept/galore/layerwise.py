"""Layer-wise GaLore: update each parameter as soon as its gradient is complete, then free that gradient.

GaLore (Zhao et al. 2024), §4.3 "per-layer weight updates": only one layer's full gradient is alive at a time.
Here the optimizer itself is an ordinary ``torch.optim.Optimizer`` (so LR schedulers, ``state_dict`` and Trainer
checkpoints work unchanged) whose post-accumulate-grad hooks do the update.

Gradient accumulation: a hook updates only on the accumulation boundary, read from accelerate's shared
``GradientState.sync_gradients`` (the Trainer sets it before every micro-batch, ``Accelerator.accumulate`` does the
same, and it is ``True`` in a plain loop). On the other micro-batches the gradient accumulates in ``.grad`` as usual.

Not possible layer-wise, so refused up front: clipping by the *global* gradient norm (every layer is updated
before the last gradient exists) and DDP (hooks see the local gradient before the all-reduce). The real global
gradient norm is still measured (sum of per-parameter squared norms) and exposed as ``last_grad_norm``; the
registration's :class:`LayerwiseGradNormCallback` writes it into the Trainer's ``grad_norm`` log.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from transformers import TrainerCallback

from ..events import unwrap_optimizer

if TYPE_CHECKING:
    from .optimizer import GaLoreOptimizer


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class LayerwiseStepper:
    """The hooks and bookkeeping of a layer-wise :class:`~hf_pept.galore.optimizer.GaLoreOptimizer`."""

    def __init__(self, optimizer: GaLoreOptimizer):
        if _distributed_world_size() > 1:
            raise ValueError(
                "Layer-wise GaLore updates each layer from its local gradient inside backward, before DDP "
                "all-reduces it, so it cannot run distributed; use the non-layerwise optimizer (e.g. "
                "optim='galore_adamw') for multi-process training."
            )
        self.optimizer = optimizer
        # group *indices*: load_state_dict (accelerate's device placement, checkpoint resume) replaces the group
        # dicts, and the LR scheduler writes into the current ones
        self._group_index = {p: i for i, g in enumerate(optimizer.param_groups) for p in g["params"]}
        self._squared_norms: list[torch.Tensor] = []
        self._refreshed: dict[int, int] = {}
        self._gradient_state = None
        self.handles = [p.register_post_accumulate_grad_hook(self._hook) for p in self._group_index if p.requires_grad]

    def _at_accumulation_boundary(self) -> bool:
        if self._gradient_state is None:
            from accelerate.state import GradientState

            self._gradient_state = GradientState()
        return bool(self._gradient_state.sync_gradients)

    @torch.no_grad()
    def _hook(self, p: torch.Tensor) -> None:
        if p.grad is None or not self._at_accumulation_boundary():
            return
        self._squared_norms.append(torch.linalg.vector_norm(p.grad, dtype=torch.float32).square())
        group = self.optimizer.param_groups[self._group_index[p]]
        self.optimizer._update_params(group, [p], self._refreshed)
        p.grad = None

    def finish_step(self) -> None:
        """Close an optimizer step: publish the global gradient norm and the projector events of this step."""
        if self._squared_norms:
            self.optimizer.last_grad_norm = float(torch.stack(self._squared_norms).sum().sqrt())
        self._squared_norms = []
        self.optimizer._record_refreshes(self._refreshed)
        self._refreshed = {}

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


class LayerwiseGradNormCallback(TrainerCallback):
    """Logs the real gradient norm of a layer-wise GaLore run.

    With layer-wise updates every ``.grad`` is already freed when the Trainer measures the norm, so it would log 0;
    this callback replaces that value (in the logs and in ``state.log_history``) by the norm the hooks measured.
    It does nothing for any other optimizer.
    """

    def on_log(self, args, state, control, logs=None, optimizer=None, **kwargs):
        inner = unwrap_optimizer(optimizer)
        grad_norm = getattr(inner, "last_grad_norm", None)
        if not getattr(inner, "layerwise", False) or grad_norm is None or not logs or "grad_norm" not in logs:
            return
        logs["grad_norm"] = grad_norm
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1]["grad_norm"] = grad_norm
