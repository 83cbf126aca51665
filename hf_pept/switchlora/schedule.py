"""SwitchLoRA's switching frequency: how many vectors each layer switches at optimizer step t.

With interval₀ = ``switch_interval``, descent rate ρ = ``switch_descent_rate`` and T the run's optimizer steps
(the authors' "exponential" schedule):

    interval(t) = interval₀ / 0.3^((t + 1) / (ρ·T)),        k̄(t) = r / interval(t)

so a vector is switched every interval(t) steps on average and the rate has fallen to 30 % at t = ρ·T (about 9 % at
2ρ·T, 2.7 % at 3ρ·T). t counts the optimizer steps completed before the switch (0 for the first step). Each layer
switches k(t) = ⌊k̄(t)⌋ + 1[u < k̄(t) − ⌊k̄(t)⌋] rows of A and as many columns of B, u ~ U[0, 1) drawn per layer
and step (stochastic rounding, as the authors' code does with numpy's global RNG). Here u comes from a generator
seeded by (seed, t): the draws are a pure function of the config and the step, so every data-parallel rank and a
run resumed from any checkpoint draw the same u with nothing stored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..tuners import derived_generator

DECAY_BASE = 0.3
_DRAW_STREAM = 1


@dataclass(frozen=True)
class SwitchSchedule:
    switch_interval: int
    switch_descent_rate: float
    total_steps: int

    def __post_init__(self):
        if isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps < 1:
            raise ValueError(
                f"SwitchLoRA's schedule needs the run's total optimizer steps T >= 1 (max_steps), got "
                f"{self.total_steps!r}"
            )

    @classmethod
    def from_config(cls, config, total_steps: int) -> SwitchSchedule:
        return cls(config.switch_interval, config.switch_descent_rate, total_steps)

    def interval(self, step: int) -> float:
        """interval(t) = interval₀ / 0.3^((t+1)/(ρ·T)); ``inf`` once 0.3^(...) underflows."""
        rate = DECAY_BASE ** ((step + 1) / (self.switch_descent_rate * self.total_steps))
        return self.switch_interval / rate if rate > 0 else math.inf

    def expected_switches(self, step: int, r: int) -> float:
        """k̄(t) = r / interval(t): vectors per layer and side at step t, before rounding."""
        return r / self.interval(step)

    def draws(self, step: int, layers: int, seed: int) -> torch.Tensor:
        """u ~ U[0, 1), one per layer, from the (seed, step) stream (float64, CPU)."""
        return torch.rand(layers, generator=derived_generator(seed, step, "cpu", _DRAW_STREAM), dtype=torch.float64)

    def switches(self, step: int, r: int, u: float) -> int:
        """k(t) = ⌊k̄⌋ + 1[u < frac(k̄)]."""
        expected = self.expected_switches(step, r)
        whole = math.floor(expected)
        return whole + int(u < expected - whole)
