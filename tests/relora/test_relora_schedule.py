"""The jagged learning-rate multiplier around restarts, on top of stock transformers schedules."""

import io
import math

import pytest
import torch
from transformers import get_cosine_schedule_with_warmup, get_scheduler

from hf_pept.relora.schedule import JaggedSchedule, apply_jagged_schedule


def test_multiplier_values_around_restarts():
    schedule = JaggedSchedule(relora_steps=10, restart_warmup_steps=4)
    # Before the first restart: untouched. At restart t_k = 10, 20: 0, then (t − t_k)/4 up to 1.
    expected = {0: 1, 9: 1, 10: 0, 11: 0.25, 12: 0.5, 13: 0.75, 14: 1, 19: 1, 20: 0, 21: 0.25, 24: 1}
    assert {t: schedule.multiplier(t) for t in expected} == pytest.approx(expected)
    assert [t for t in range(1, 31) if schedule.is_merge_step(t)] == [10, 20, 30]


def test_warm_start_shifts_the_cycles():
    schedule = JaggedSchedule(relora_steps=10, restart_warmup_steps=2, warm_start_steps=5)
    expected = {4: 1, 5: 0, 6: 0.5, 7: 1, 14: 1, 15: 0, 16: 0.5, 17: 1, 25: 0}
    assert {t: schedule.multiplier(t) for t in expected} == pytest.approx(expected)
    assert [t for t in range(1, 30) if schedule.is_merge_step(t)] == [15, 25]
    assert [t for t in range(1, 30) if schedule.is_warm_start_end(t)] == [5]
    assert schedule.in_warm_start(4) and not schedule.in_warm_start(5)


def _cosine_with_warmup(t, warmup, total):
    """transformers' cosine schedule written out: linear warm-up, then 0.5·(1 + cos(π·progress))."""
    if t < warmup:
        return t / warmup
    return 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


def test_jag_on_top_of_cosine_and_the_scheduler_checkpoint_loads_weights_only():
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=3, num_training_steps=40)
    schedule = JaggedSchedule(relora_steps=8, restart_warmup_steps=3)
    apply_jagged_schedule(scheduler, schedule)
    apply_jagged_schedule(scheduler, schedule)  # idempotent: no double jag
    lrs = []
    for _ in range(30):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    for t, lr in enumerate(lrs, start=1):
        restart = (t // 8) * 8
        jag = 1.0 if restart == 0 else min(1.0, (t - restart) / 3)
        assert lr == pytest.approx(0.1 * _cosine_with_warmup(t, 3, 40) * jag, abs=1e-12), t
    assert lrs[7] == 0 and lrs[15] == 0  # t = 8, 16

    buffer = io.BytesIO()
    torch.save(scheduler.state_dict(), buffer)
    buffer.seek(0)
    restored = get_cosine_schedule_with_warmup(optimizer, num_warmup_steps=3, num_training_steps=40)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    apply_jagged_schedule(restored, schedule)
    scheduler.step()
    restored.step()
    assert restored.get_last_lr() == scheduler.get_last_lr()


def test_non_lambda_scheduler_is_refused():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="LambdaLR"):
        apply_jagged_schedule(get_scheduler("reduce_lr_on_plateau", optimizer), JaggedSchedule(10, 2))
