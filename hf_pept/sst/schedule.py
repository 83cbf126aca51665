"""SST's schedule: when to resample and re-SVD, and the learning-rate warm-up after each resample.

With T3 = ``iteration_steps`` and T2 = ``round_iterations`` (Zhao et al. 2025, arXiv 2405.15481, Appendix A), and t
the number of completed optimizer steps:

* after step t with t mod T3 = 0 a new iteration starts: r singular vectors are resampled (t > 0);
* after step t with t mod (T2·T3) = 0 a round ends: U·diag(Σ)·Vᵀ is decomposed again first, then resampled;
* each iteration starts with a learning-rate warm-up of W = ``iteration_warmup_steps`` steps (the paper: 20 of 200).
  On top of the stock multiplier λ(t) (any ``LambdaLR`` schedule):

      λ_SST(t) = λ(t) · min(1, (t − t_k + 1) / W)     for the last resample t_k ≤ t (t_k ≥ T3);  λ(t) before it.

  ``LambdaLR`` evaluates λ at t completed steps for the next step, so the first step after a resample runs at
  λ(t)/W and the W-th at λ(t). Where the paper is silent, our choices: the first iteration has no warm-up of its
  own (the schedule's warm-up covers it), and the multiplier applies to every parameter group — the Trainer puts
  the singular values and vectors in the same groups as everything else, as ReLoRA's restarts do.

Both are pure functions of t, so a resumed run continues exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..tuners import MultipliedLambda, wrap_lr_lambdas


@dataclass(frozen=True)
class SSTSchedule:
    iteration_steps: int
    round_iterations: int
    iteration_warmup_steps: int = 0

    @property
    def round_steps(self) -> int:
        return self.iteration_steps * self.round_iterations

    def is_resample_step(self, step: int) -> bool:
        """After this optimizer step a new iteration starts (new active vectors)."""
        return step > 0 and step % self.iteration_steps == 0

    def is_resvd_step(self, step: int) -> bool:
        """After this optimizer step a round ends (re-SVD before the resample)."""
        return step > 0 and step % self.round_steps == 0

    def multiplier(self, step: int) -> float:
        """The warm-up factor min(1, (t − t_k + 1)/W) at ``step`` completed optimizer steps."""
        if self.iteration_warmup_steps == 0 or step < self.iteration_steps:
            return 1.0
        since = step % self.iteration_steps
        return min(1.0, (since + 1) / self.iteration_warmup_steps)


class IterationWarmupLambda(MultipliedLambda):
    """λ_SST(t) = λ(t) · warm-up(t) as a ``LambdaLR`` lr_lambda (no ``__dict__`` entries: see
    :class:`~hf_pept.tuners.MultipliedLambda`)."""

    __slots__ = ()


def apply_iteration_warmup(lr_scheduler, schedule: SSTSchedule) -> None:
    """Wrap every lr_lambda of ``lr_scheduler`` (a ``LambdaLR``) with the warm-up, in place; idempotent.

    The optimizer's current learning rates are left as the scheduler last set them, so attaching to a scheduler
    restored from a checkpoint changes nothing until its next ``step()``.
    """
    wrap_lr_lambdas(
        lr_scheduler,
        IterationWarmupLambda,
        schedule,
        "SST's per-iteration learning-rate warm-up",
        ". Use iteration_warmup_steps=0 to train without it.",
    )
