"""ReLoRA's jagged learning-rate schedule on top of any ``LambdaLR`` schedule (every transformers
``lr_scheduler_type`` except ``reduce_lr_on_plateau`` and ``greedy``).

ReLoRA (Lialin et al. 2023, arXiv 2307.05695, §3 "Jagged learning rate scheduler"): after each restart the
learning rate drops to zero and warms up again. With restarts at steps t_k = N_ws + k·T (k ≥ 1; plus t_0 = N_ws
when the warm start N_ws > 0), T = ``relora_steps``, W = ``restart_warmup_steps``, and the stock multiplier λ(t):

    λ_jagged(t) = λ(t) · min(1, (t − t_k) / W)     for the last restart t_k ≤ t;     λ(t) before the first one.

t counts completed optimizer steps (``LambdaLR.last_epoch``), so the step right after a restart runs at LR 0 and the
multiplier is back at 1 after W more steps. The multiplier is a pure function of t: resuming from a checkpoint
restores it exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tuners import MultipliedLambda, wrap_lr_lambdas


@dataclass(frozen=True)
class JaggedSchedule:
    relora_steps: int
    restart_warmup_steps: int
    warm_start_steps: int = 0

    @classmethod
    def from_config(cls, config) -> JaggedSchedule:
        return cls(config.relora_steps, config.restart_warmup_steps, config.warm_start_steps)

    def is_warm_start_end(self, step: int) -> bool:
        """After this optimizer step the full-rank warm start ends (weights frozen, factors restart)."""
        return self.warm_start_steps > 0 and step == self.warm_start_steps

    def is_merge_step(self, step: int) -> bool:
        """After this optimizer step the factors are merged and the optimizer state reset."""
        cycle_step = step - self.warm_start_steps
        return cycle_step > 0 and cycle_step % self.relora_steps == 0

    def in_warm_start(self, step: int) -> bool:
        """Whether the optimizer step after ``step`` completed steps is a full-rank warm-start step."""
        return step < self.warm_start_steps

    def last_restart(self, step: int) -> int | None:
        if self.warm_start_steps > 0:
            if step < self.warm_start_steps:
                return None
        elif step < self.relora_steps:
            return None
        cycle_step = step - self.warm_start_steps
        return self.warm_start_steps + (cycle_step // self.relora_steps) * self.relora_steps

    def multiplier(self, step: int) -> float:
        """The jag factor min(1, (t − t_k)/W) at ``step`` completed optimizer steps."""
        restart = self.last_restart(step)
        if restart is None or self.restart_warmup_steps == 0:
            return 1.0
        return min(1.0, (step - restart) / self.restart_warmup_steps)


class JaggedLambda(MultipliedLambda):
    """λ_jagged(t) = λ(t) · jag(t) as a ``LambdaLR`` lr_lambda (no ``__dict__`` entries: see
    :class:`~hf_pept.tuners.MultipliedLambda`)."""

    __slots__ = ()


def apply_jagged_schedule(lr_scheduler, schedule: JaggedSchedule) -> None:
    """Wrap every lr_lambda of ``lr_scheduler`` (a ``LambdaLR``) with the jag, in place; idempotent.

    The optimizer's current learning rates are left as the scheduler last set them, so attaching to a scheduler
    restored from a checkpoint changes nothing until its next ``step()``.
    """
    wrap_lr_lambdas(lr_scheduler, JaggedLambda, schedule, "ReLoRA's jagged learning rate")
