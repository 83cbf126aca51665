"""Optimizer-state reset at a ReLoRA restart, checked against top-k selections and dequantization written here."""

import pytest
import torch

from hf_pept.optim_state import drop_optimizer_state, reset_optimizer_state


def _stepped(optimizer_cls, steps=3, **kwargs):
    generator = torch.Generator().manual_seed(0)
    factor_a = torch.nn.Parameter(torch.randn(8, 40, generator=generator))
    factor_b = torch.nn.Parameter(torch.randn(40, 8, generator=generator))
    other = torch.nn.Parameter(torch.randn(40, 40, generator=generator))
    optimizer = optimizer_cls([factor_a, factor_b, other], lr=1e-2, **kwargs)
    for _ in range(steps):
        for param in (factor_a, factor_b, other):
            param.grad = torch.randn(param.shape, generator=generator)
        optimizer.step()
    return optimizer, [factor_a, factor_b], other


def _snapshot(state):
    return {key: value.clone() if torch.is_tensor(value) else value for key, value in state.items()}


def _expected_top_k(moment, prune_ratio):
    k = round(prune_ratio * moment.numel())
    order = torch.sort(moment.reshape(-1).abs(), stable=True).indices
    expected = moment.reshape(-1).clone()
    expected[order[:k]] = 0
    return expected.reshape(moment.shape)


@pytest.mark.parametrize(
    ("optimizer_cls", "kwargs", "moments"),
    [
        (torch.optim.AdamW, {}, ("exp_avg", "exp_avg_sq")),
        (torch.optim.Adam, {"amsgrad": True}, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")),
        (torch.optim.SGD, {"momentum": 0.9}, ("momentum_buffer",)),
    ],
)
def test_magnitude_reset_keeps_the_largest_tenth_of_each_factor_moment_only(optimizer_cls, kwargs, moments):
    optimizer, factors, other = _stepped(optimizer_cls, **kwargs)
    before = {param: _snapshot(optimizer.state[param]) for param in [*factors, other]}
    stats = reset_optimizer_state(optimizer, factors, "magnitude", 0.9)
    zeroed = 0
    for param in factors:
        state = optimizer.state[param]
        expected = {key: _expected_top_k(before[param][key], 0.9) for key in moments}
        if "exp_avg_sq" in expected:
            # A first moment without its second one would make Adam step by m / ε: it goes too.
            expected["exp_avg"] = expected["exp_avg"].masked_fill(expected["exp_avg_sq"] == 0, 0)
        for key in moments:
            assert torch.equal(state[key], expected[key]), key
            zeroed += int((expected[key] == 0).sum())
        if "step" in state:
            assert torch.equal(torch.as_tensor(state["step"]), torch.as_tensor(before[param]["step"]))
    for key, value in optimizer.state[other].items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(before[other][key]))
    assert stats == {"zeroed": zeroed, "entries": sum(p.numel() for p in factors) * len(moments)}


@pytest.mark.parametrize("mode", ["magnitude", "random"])
def test_after_a_reset_a_zero_gradient_step_moves_a_factor_by_at_most_a_few_lr(mode):
    # Right after a restart B = 0, so A's gradient is exactly zero: Adam must not divide a kept m by a pruned v.
    optimizer, factors, _ = _stepped(torch.optim.AdamW, steps=5, eps=1e-8)
    reset_optimizer_state(optimizer, factors, mode, 0.9, torch.Generator().manual_seed(1))
    before = [p.detach().clone() for p in factors]
    for param in factors:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    for param, old in zip(factors, before):
        assert (param - old).abs().max() < 10 * 1e-2  # lr = 1e-2; m̂ / √v̂ stays O(1) where both are kept


def test_random_reset_zeroes_about_the_ratio_and_repeats_with_the_same_seed():
    first, factors_1, _ = _stepped(torch.optim.AdamW)
    second, factors_2, _ = _stepped(torch.optim.AdamW)
    originals = [first.state[p]["exp_avg_sq"].clone() for p in factors_1]
    reset_optimizer_state(first, factors_1, "random", 0.5, torch.Generator().manual_seed(4))
    reset_optimizer_state(second, factors_2, "random", 0.5, torch.Generator().manual_seed(4))
    for p1, p2, original in zip(factors_1, factors_2, originals):
        state = first.state[p1]
        assert torch.equal(state["exp_avg_sq"], second.state[p2]["exp_avg_sq"])
        assert torch.equal(state["exp_avg"], second.state[p2]["exp_avg"])
        kept = state["exp_avg_sq"] != 0
        assert torch.equal(state["exp_avg_sq"][kept], original[kept])
        assert 0.35 < 1 - kept.float().mean() < 0.65  # 320 entries, p = 0.5: std ≈ 0.03
        assert not ((state["exp_avg"] != 0) & ~kept).any()


def test_zero_none_and_drop():
    optimizer, factors, other = _stepped(torch.optim.AdamW)
    untouched = optimizer.state[factors[0]]["exp_avg"].clone()
    reset_optimizer_state(optimizer, factors, "none")
    assert torch.equal(optimizer.state[factors[0]]["exp_avg"], untouched)
    reset_optimizer_state(optimizer, factors, "zero")
    assert all(torch.count_nonzero(optimizer.state[p]["exp_avg_sq"]) == 0 for p in factors)
    assert torch.count_nonzero(optimizer.state[other]["exp_avg"]) > 0
    assert drop_optimizer_state(optimizer, factors) == 2
    assert factors[0] not in optimizer.state and other in optimizer.state


def _dequantize(codes, qmap, absmax, block_size=256):
    """bitsandbytes' block-wise dynamic quantization: value = qmap[code] · absmax[block of the entry]."""
    flat = qmap[codes.long()].reshape(-1)
    scale = absmax.repeat_interleave(block_size)[: flat.numel()]
    return (flat * scale).reshape(codes.shape)


def test_eight_bit_adamw_state_is_pruned_in_the_quantized_domain():
    bnb = pytest.importorskip("bitsandbytes")
    generator = torch.Generator().manual_seed(0)
    factor = torch.nn.Parameter(torch.randn(64, 80, generator=generator))
    optimizer = bnb.optim.AdamW8bit([factor], lr=1e-3, min_8bit_size=0)
    can_step = _eight_bit_state(bnb, optimizer, factor, generator)
    state = optimizer.state[factor]
    before = {key: value.clone() for key, value in state.items() if torch.is_tensor(value)}
    reset_optimizer_state(optimizer, [factor], "magnitude", 0.9)
    for codes, qmap, absmax in (("state1", "qmap1", "absmax1"), ("state2", "qmap2", "absmax2")):
        old = _dequantize(before[codes], before[qmap], before[absmax])
        new = _dequantize(state[codes], state[qmap], state[absmax])
        kept = new != 0
        assert torch.equal(new[kept], old[kept])  # kept codes and block scales untouched
        if codes == "state1":
            second = _dequantize(state["state2"], state["qmap2"], state["absmax2"])
            assert not (kept & (second == 0)).any()  # no first moment without its second
        keep = factor.numel() - round(0.9 * factor.numel())
        assert int(kept.sum()) <= keep
        # Kept entries are among the `keep` largest dequantized magnitudes.
        assert old[kept].abs().min() >= old.abs().reshape(-1).sort(descending=True).values[keep - 1]
    if can_step:  # The optimizer still steps from the pruned state.
        factor.grad = torch.randn(factor.shape, generator=generator)
        optimizer.step()
        assert torch.isfinite(factor).all()


def _eight_bit_state(bnb, optimizer, factor, generator) -> bool:
    """Three real steps where bitsandbytes can step this device; else (bitsandbytes < 0.49 has no CPU 8-bit step)
    the same state layout filled by hand: its own ``init_state``, moments quantized block-wise with its qmaps.
    Returns whether the optimizer can step here."""
    try:
        for _ in range(3):
            factor.grad = torch.randn(factor.shape, generator=generator)
            optimizer.step()
        return True
    except RuntimeError:
        optimizer.state.clear()
    optimizer.init_state(optimizer.param_groups[0], factor, 0, 0)
    state = optimizer.state[factor]
    moments = {"1": 0.1 * torch.randn(factor.shape, generator=generator),
               "2": 0.01 * torch.rand(factor.shape, generator=generator)}  # fmt: skip
    for index, values in moments.items():
        # a copy of the map: bitsandbytes 0.48's CPU quantize_blockwise writes into the code it is given
        code = state[f"qmap{index}"].clone()
        codes, quant_state = bnb.functional.quantize_blockwise(values, code=code, blocksize=256)
        state[f"state{index}"].copy_(codes)
        state[f"absmax{index}"].copy_(quant_state.absmax)
    state["step"] = 3
    return False
