"""The switching schedule k(t) against interval(t) = interval₀ / 0.3^((t+1)/(ρ·T)) written out here."""

import math

import pytest

from hf_pept.switchlora import SwitchSchedule


@pytest.mark.parametrize(
    "step, interval",
    [
        (0, 40 / 0.3 ** (1 / 100)),  # ≈ 40.49: the start
        (99, 40 / 0.3),  # t + 1 = ρ·T: the rate is down to 30 %
        (199, 40 / 0.09),  # 2ρ·T: 9 %
        (999, 40 / 0.3**10),  # the end of the run: ~6.8e6 steps between switches
    ],
)
def test_interval_and_expected_switches_follow_the_formula(step, interval):
    schedule = SwitchSchedule(switch_interval=40, switch_descent_rate=0.1, total_steps=1000)
    assert schedule.interval(step) == pytest.approx(interval, rel=1e-12)
    assert schedule.expected_switches(step, 128) == pytest.approx(128 / interval, rel=1e-12)


def test_whole_part_always_and_the_fraction_with_its_probability():
    schedule = SwitchSchedule(40, 0.1, 1000)
    expected = 128 / (40 / 0.3 ** (1 / 100))  # k̄(0) ≈ 3.162
    assert schedule.switches(0, 128, u=0.0) == 4 and schedule.switches(0, 128, u=0.99) == 3
    draws = schedule.draws(0, 20000, seed=3)
    counts = [schedule.switches(0, 128, u) for u in draws.tolist()]
    assert set(counts) == {3, 4}
    # The mean of the rounded counts is k̄: 4·p + 3·(1 − p) with p = frac(k̄); 20000 draws → σ ≈ 0.0033.
    assert sum(counts) / len(counts) == pytest.approx(expected, abs=0.015)


def test_draws_are_a_function_of_seed_and_step_only():
    schedule = SwitchSchedule(40, 0.1, 1000)
    assert schedule.draws(7, 14, seed=1).tolist() == schedule.draws(7, 14, seed=1).tolist()
    assert schedule.draws(7, 14, seed=1).tolist() != schedule.draws(8, 14, seed=1).tolist()
    assert schedule.draws(7, 14, seed=1).tolist() != schedule.draws(7, 14, seed=2).tolist()


def test_switching_stops_once_the_interval_overflows():
    schedule = SwitchSchedule(40, 0.001, 10**6)  # ρ·T = 1000: 0.3^(t/1000) underflows near t = 6e5
    assert schedule.interval(10**6 - 1) == math.inf
    assert schedule.switches(10**6 - 1, 128, u=0.0) == 0
