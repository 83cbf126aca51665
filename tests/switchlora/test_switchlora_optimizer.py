"""Optimizer state around a switch, against torch's own AdamW as the reference: the counterpart's moments restart
(and it trains as a fresh AdamW on that vector, its own step count), the switched vector keeps its state (it trains
as the uninterrupted AdamW), frozen vectors get no gradient."""

import dataclasses
import logging

import torch
from peft import get_peft_model
from switchlora_helpers import OneLinear

from hf_pept.switchlora import SwitchLoRAConfig, SwitchLoRAStepper, SwitchSchedule

SWITCH_STEP, STEPS, FREEZE = 2, 9, 2


@dataclasses.dataclass(frozen=True)
class OneSwitchAt(SwitchSchedule):
    """One vector per side at ``at``, none otherwise (the test follows single vectors)."""

    at: int = SWITCH_STEP

    def switches(self, step, r, u):
        return 1 if step == self.at else 0


def _setup(optimizer_cls=torch.optim.AdamW, **optimizer_kwargs):
    torch.manual_seed(0)
    model = get_peft_model(OneLinear(), SwitchLoRAConfig(r=4, target_modules=["proj"], freeze_steps=FREEZE))
    layer = model.base_model.model.proj
    a, b = layer.switchlora_A["default"].weight, layer.switchlora_B["default"].weight
    optimizer = optimizer_cls([a, b], lr=1e-2, **optimizer_kwargs)
    stepper = SwitchLoRAStepper(model, optimizer, total_steps=100)
    stepper.schedule = OneSwitchAt(10, 0.1, 100)
    data = torch.randn(STEPS, 6, 12, generator=torch.Generator().manual_seed(1))
    target = torch.randn(6, 10, generator=torch.Generator().manual_seed(2))
    return model, layer, a, b, optimizer, stepper, data, target


def test_counterpart_restarts_as_a_fresh_adamw_and_the_rest_as_the_uninterrupted_one():
    model, layer, a, b, optimizer, stepper, data, target = _setup()
    # References: AdamW over copies of A and B fed the same gradients, never reset; and, from the switch on,
    # a fresh AdamW on the counterpart vectors alone (their own moments and step count from zero).
    ref_a, ref_b = (torch.nn.Parameter(p.detach().clone()) for p in (a, b))
    reference = torch.optim.AdamW([ref_a, ref_b], lr=1e-2)
    fresh_row = fresh_column = fresh = None
    for step in range(STEPS):
        ((model(data[step]) - target) ** 2).mean().backward()
        if step == SWITCH_STEP:
            kept = {p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in (a, b)}
        event = stepper.before_optimizer_step()
        assert (event is not None) == (step == SWITCH_STEP)
        if step == SWITCH_STEP:
            # A's row 0 and B's column 2 were switched (pointers 0 and r/2): B's column 0 and A's row 2 restart.
            assert event == {"event": "switchlora_switch", "vectors": 2, "layers": 1}
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.count_nonzero(optimizer.state[b][key][:, 0]) == 0
                assert torch.count_nonzero(optimizer.state[a][key][2]) == 0
                torch.testing.assert_close(optimizer.state[a][key][[0, 1, 3]], kept[a][key][[0, 1, 3]], rtol=0, atol=0)
                torch.testing.assert_close(optimizer.state[b][key][:, 1:], kept[b][key][:, 1:], rtol=0, atol=0)
            with torch.no_grad():  # the switch replaced these values; their optimizer state goes on
                ref_a[0] = a[0]
                ref_b[:, 2] = b[:, 2]
            fresh_row = torch.nn.Parameter(a[2:3].detach().clone())
            fresh_column = torch.nn.Parameter(b[:, 0:1].detach().clone())
            fresh = torch.optim.AdamW([fresh_row, fresh_column], lr=1e-2)
        frozen = SWITCH_STEP <= step < SWITCH_STEP + FREEZE
        assert (torch.count_nonzero(a.grad[2]) == 0) == frozen
        assert (torch.count_nonzero(b.grad[:, 0]) == 0) == frozen
        ref_a.grad, ref_b.grad = a.grad.clone(), b.grad.clone()
        reference.step()
        if fresh is not None:
            fresh_row.grad, fresh_column.grad = a.grad[2:3].clone(), b.grad[:, 0:1].clone()
            fresh.step()
        optimizer.step()
        stepper.after_optimizer_step()
        optimizer.zero_grad()
    close = {"rtol": 1e-5, "atol": 1e-7}
    torch.testing.assert_close(a[[0, 1, 3]], ref_a[[0, 1, 3]], **close)
    torch.testing.assert_close(b[:, 1:], ref_b[:, 1:], **close)
    torch.testing.assert_close(a[2:3], fresh_row, **close)
    torch.testing.assert_close(b[:, 0:1], fresh_column, **close)
    # The vectors' own bias correction matters: with the shared step count they would have moved elsewhere.
    assert (a[2] - ref_a[2]).abs().max() > 1e-3 and (b[:, 0] - ref_b[:, 0]).abs().max() > 1e-3
    assert stepper.global_step == STEPS


def test_other_optimizers_get_the_counterparts_rows_zeroed_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        model, layer, a, b, optimizer, stepper, data, target = _setup(torch.optim.SGD, momentum=0.9)
    assert "per-vector bias correction needs torch.optim.Adam/AdamW" in caplog.text
    for step in range(SWITCH_STEP + 1):
        ((model(data[step]) - target) ** 2).mean().backward()
        if step == SWITCH_STEP:
            kept_a = optimizer.state[a]["momentum_buffer"].clone()
        stepper.before_optimizer_step()
        if step == SWITCH_STEP:
            assert torch.count_nonzero(optimizer.state[b]["momentum_buffer"][:, 0]) == 0
            assert torch.count_nonzero(optimizer.state[a]["momentum_buffer"][2]) == 0
            torch.testing.assert_close(optimizer.state[a]["momentum_buffer"][0], kept_a[0], rtol=0, atol=0)
        optimizer.step()
        stepper.after_optimizer_step()
        optimizer.zero_grad()


def test_a_skipped_update_switches_nothing():
    # Gradients dropped before the step (hf_pept's divergence guard does that for a non-finite gradient): no switch,
    # no freeze counting down, as the authors' loop switches only before an update it makes.
    model, layer, a, b, optimizer, stepper, data, target = _setup()
    stepper.schedule = OneSwitchAt(10, 0.1, 100, at=0)
    pool = layer.switchlora_pool["default"]
    slots = pool.slots_A.clone()
    assert stepper.before_optimizer_step() is None
    optimizer.step()
    stepper.after_optimizer_step()
    assert torch.equal(pool.slots_A, slots) and stepper.global_step == 1
    ((model(data[0]) - target) ** 2).mean().backward()
    stepper.schedule = OneSwitchAt(10, 0.1, 100, at=1)
    assert stepper.before_optimizer_step() == {"event": "switchlora_switch", "vectors": 2, "layers": 1}
