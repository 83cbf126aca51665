"""Layer-wise GaLore: update each parameter as soon as its gradient is complete, then free that gradient.

GaLore (Zhao et al. 2024), §4.3 "per-layer weight updates": only one layer's full gradient is alive at a time.
Here the optimizer itself is an ordinary ``torch.optim.Optimizer`` (so LR schedulers, ``state_dict`` and Trainer
checkpoints work unchanged) whose post-accumulate-grad hooks do the update through its public per-parameter step
(``step_parameter``, then ``finish_parameter_steps`` from ``optimizer.step()``).

Gradient accumulation: a hook updates only on the accumulation boundary, read from accelerate's shared
``GradientState.sync_gradients`` (the Trainer sets it before every micro-batch, ``Accelerator.accumulate`` does the
same, and it is ``True`` in a plain loop). On the other micro-batches the gradient accumulates in ``.grad`` as usual.

Not possible layer-wise: clipping by the *global* gradient norm (every layer is updated before the last gradient
exists; the Trainer integration warns and does not clip), DDP (hooks see the local gradient before the
all-reduce) and FSDP2 (hooks see the unsharded local gradient before the reduce-scatter): both refused. The real
global gradient norm is still measured (sum of per-parameter squared norms) and exposed as ``last_grad_norm``; :class:`~hf_pept.galore.integration.LayerwiseGradNormCallback` writes it into the
Trainer's ``grad_norm`` log.

This module needs only torch (accelerate is imported at the first hook call), so the optimizers work in a plain
PyTorch loop without transformers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch

from ..fsdp import is_dtensor


class ParameterSteppingOptimizer(Protocol):
    """What the stepper needs from its optimizer (the public per-parameter API of ``GaLoreOptimizer``)."""

    param_groups: list[dict[str, Any]]
    last_grad_norm: float | None

    def step_parameter(self, p: torch.Tensor) -> None: ...

    def finish_parameter_steps(self) -> None: ...


def _distributed_world_size() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size()
    return 1


class LayerwiseStepper:
    """The hooks and bookkeeping of a layer-wise :class:`~hf_pept.galore.optimizer.GaLoreOptimizer`."""

    def __init__(self, optimizer: ParameterSteppingOptimizer):
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if _distributed_world_size() > 1 or any(is_dtensor(p) for p in params):
            raise ValueError(
                "Layer-wise GaLore updates each layer from its local gradient inside backward, before DDP "
                "all-reduces it or FSDP2 reduce-scatters it, so it cannot run distributed; use the non-layerwise "
                "optimizer (e.g. optim='galore_adamw') for multi-process training (DDP or FSDP2)."
            )
        self.optimizer = optimizer
        self._squared_norms: list[torch.Tensor] = []
        self._gradient_state = None
        self.handles: list[torch.utils.hooks.RemovableHandle] = []
        self.watch(p for g in optimizer.param_groups for p in g["params"])

    def watch(self, params: Iterable[torch.Tensor]) -> None:
        """Hook ``params`` (those that require grad) so that each is updated as soon as its gradient is complete."""
        self.handles += [p.register_post_accumulate_grad_hook(self._hook) for p in params if p.requires_grad]

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
        self.optimizer.step_parameter(p)
        p.grad = None

    def finish_step(self) -> None:
        """Close an optimizer step: publish the global gradient norm and the projector events of this step."""
        if self._squared_norms:
            self.optimizer.last_grad_norm = float(torch.stack(self._squared_norms).sum().sqrt())
        self._squared_norms = []
        self.optimizer.finish_parameter_steps()

    def remove_hooks(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []
