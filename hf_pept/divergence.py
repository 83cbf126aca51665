"""Divergence guard: no non-finite gradient reaches the weights or the optimizer state, and a dead run says so.

:class:`DivergenceGuard` runs at ``on_pre_optimizer_step`` (after clipping, before ``optimizer.step()``). When any
gradient holds a NaN or an infinity (a non-finite loss shows there too), it drops every gradient (``p.grad = None``),
so the optimizer's step skips each parameter: weights, moments, step counts, GaLore projectors and ReLoRA factors
stay bit-identical to before the step. The learning-rate schedule still advances (the step is spent, not redone).
Each skip is an event ``nonfinite_update_skipped``; after ``max_bad_steps`` skips in a row the run stops with
:attr:`failure` saying when and at which learning rate.

A run whose logged gradient norm is exactly 0 for ``dead_steps`` steps (the loss then sits at ln(vocab), nothing
learns: typically a learning rate so large that the logits saturated) is stopped as *dead* the same way.

Layer-wise optimizers (``optim="galore_*_layerwise"``) update inside backward, before this callback runs, so for
them only the dead-run check applies. For a stock ``Trainer``: ``callbacks=[DivergenceGuard()]``; the trainer's
``control`` stops training, and :attr:`failure` tells why.
"""

from __future__ import annotations

import math

import torch
from transformers import TrainerCallback

from .events import record_event

SKIP_EVENT = "nonfinite_update_skipped"
STOP_EVENT = "training_stopped"


class DivergenceGuard(TrainerCallback):
    """Skip non-finite updates; stop after ``max_bad_steps`` in a row, or after ``dead_steps`` with zero gradient."""

    def __init__(self, max_bad_steps: int = 5, dead_steps: int = 20):
        for name, value in (("max_bad_steps", max_bad_steps), ("dead_steps", dead_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DivergenceGuard `{name}` must be an integer >= 1, got {value!r}")
        self.max_bad_steps = max_bad_steps
        self.dead_steps = dead_steps
        self.bad_in_a_row = 0
        self.skipped = 0
        self.zero_grad_since: int | None = None
        self.failure: str | None = None  # one line, set when the guard stopped the run
        self.status: str | None = None  # "diverged" or "dead" then

    def healthy(self) -> bool:
        """No skipped update in the current streak and not stopped (what a checkpoint saved now records)."""
        return self.bad_in_a_row == 0 and self.failure is None

    @staticmethod
    def _all_finite(grads: list[torch.Tensor]) -> bool:
        # The norm of a tensor holding a NaN / inf is NaN / inf: one reduction per tensor, one host sync per device.
        by_device: dict[torch.device, list[torch.Tensor]] = {}
        for grad in grads:
            by_device.setdefault(grad.device, []).append(grad)
        return all(
            bool(torch.isfinite(torch.stack([n.float() for n in torch._foreach_norm(group)])).all())
            for group in by_device.values()
        )

    def _stop(self, control, state, status: str, message: str) -> None:
        self.status, self.failure = status, message
        record_event(state, STOP_EVENT, reason=status, message=message)
        control.should_training_stop = True

    def on_pre_optimizer_step(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None:
            return
        params = [p for p in model.parameters() if p.grad is not None]
        if not params:
            return
        if self._all_finite([p.grad for p in params]):
            self.bad_in_a_row = 0
            return
        for p in params:
            p.grad = None
        step = state.global_step + 1
        self.bad_in_a_row += 1
        self.skipped += 1
        lr = optimizer.param_groups[0]["lr"] if optimizer is not None and optimizer.param_groups else float("nan")
        record_event(state, SKIP_EVENT, step=step, in_a_row=self.bad_in_a_row, learning_rate=lr)
        if self.bad_in_a_row >= self.max_bad_steps:
            first = step - self.bad_in_a_row + 1
            self._stop(
                control,
                state,
                "diverged",
                f"training diverged: non-finite gradients at steps {first}-{step} ({self.bad_in_a_row} in a row, "
                f"updates skipped) at learning rate {lr:.3g} (peak {args.learning_rate:.3g}); lower the learning "
                "rate or resume from the last healthy checkpoint",
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        grad_norm = (logs or {}).get("grad_norm")
        if grad_norm is None or self.failure:
            return
        if isinstance(grad_norm, torch.Tensor):
            grad_norm = float(grad_norm)
        if grad_norm != 0.0 or not math.isfinite(grad_norm):
            self.zero_grad_since = None
            return
        if self.zero_grad_since is None:
            self.zero_grad_since = state.global_step
        if state.global_step - self.zero_grad_since + 1 >= self.dead_steps:
            loss = (logs or {}).get("loss")
            self._stop(
                control,
                state,
                "dead",
                f"training is dead: gradient norm 0 since step {self.zero_grad_since} "
                f"({state.global_step - self.zero_grad_since + 1} steps; loss {loss}); nothing learns, typically "
                "a learning rate so large that the logits saturated",
            )


__all__ = ["DivergenceGuard", "SKIP_EVENT", "STOP_EVENT"]
