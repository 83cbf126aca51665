"""The layer: wrapping keeps the output, the init's scale, and a switch keeps W + s·B·A while swapping vectors with
the pool (references: dense products and copies taken in the test)."""

import copy
import math

import pytest
import torch
from peft import get_peft_model
from switchlora_helpers import OneLinear, tiny_llama
from torch import nn

from hf_pept.switchlora import SwitchLoRAConfig

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def _one_layer(r=4, **kwargs):
    model = get_peft_model(OneLinear(), SwitchLoRAConfig(r=r, target_modules=["proj"], **kwargs))
    return model, model.base_model.model.proj


def _effective_weight(layer):
    """W + s·B·A, in float64."""
    a = layer.switchlora_A["default"].weight.double()
    b = layer.switchlora_B["default"].weight.double()
    return layer.get_base_layer().weight.double() + layer.scaling["default"] * b @ a


def test_wrapping_keeps_the_models_output():
    base = tiny_llama()
    with torch.no_grad():
        expected = base(input_ids=TOKENS).logits
    model = get_peft_model(copy.deepcopy(base), SwitchLoRAConfig(r=4))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)
    layer = next(layer for _, layer in model.base_model.switchlora_layers())
    # ... because W_frozen = W − s·B₀A₀, with factors that are far from zero
    assert layer.switchlora_B["default"].weight.abs().min() > 0
    original = dict(base.named_parameters())["model.layers.0.self_attn.q_proj.weight"]
    torch.testing.assert_close(_effective_weight(layer).float(), original, rtol=0, atol=1e-6)


def test_factors_are_pool_slots_and_the_update_has_the_scale_of_a_default_linear():
    torch.manual_seed(0)
    model = get_peft_model(nn.Sequential(nn.Linear(512, 256)), SwitchLoRAConfig(r=32, target_modules=["0"]))
    layer = model.base_model.model[0]
    m, n, r = 256, 512, 32
    pool = layer.switchlora_pool["default"]
    a, b = layer.switchlora_A["default"].weight, layer.switchlora_B["default"].weight
    assert pool.candidates_A.shape == (256, n) and pool.candidates_B.shape == (256, m)
    assert pool.slots_A.tolist() == list(range(256 - r, 256))  # the last r slots, in order
    assert pool.slots_B[r // 2] == 256 - r and pool.pointer_B == r // 2  # B's window starts r/2 ahead
    torch.testing.assert_close(a, pool.candidates_A[pool.slots_A])
    torch.testing.assert_close(b, pool.candidates_B[pool.slots_B].T)
    g = 1 / math.sqrt(3)  # gain('leaky_relu', √5)
    std_a = ((math.sqrt(m) * r) / n**1.5) ** 0.25 * math.sqrt(g)
    std_b = (r / math.sqrt(m * n)) ** 0.25 * math.sqrt(g)
    assert pool.candidates_A.std().item() == pytest.approx(std_a, rel=0.02)
    assert pool.candidates_B.std().item() == pytest.approx(std_b, rel=0.02)
    # s·B·A has the entry scale of nn.Linear's default init, g/√n
    assert (layer.scaling["default"] * b @ a).std().item() == pytest.approx(g / math.sqrt(n), rel=0.05)


def test_lora_init_is_kaiming_a_and_zero_b():
    _, layer = _one_layer(init_lora_weights="lora")
    pool = layer.switchlora_pool["default"]
    assert torch.count_nonzero(layer.switchlora_B["default"].weight) == 0
    assert torch.count_nonzero(pool.candidates_B) == 0
    assert layer.switchlora_A["default"].weight.abs().max() <= 1 / math.sqrt(12)


@torch.no_grad()
def test_a_switch_keeps_w_plus_sba_and_swaps_the_vectors_with_their_pool_slots():
    _, layer = _one_layer(r=4)
    a, b = layer.switchlora_A["default"].weight, layer.switchlora_B["default"].weight
    pool = layer.switchlora_pool["default"]
    size = pool.size  # min(12, 10) = 10
    x = torch.randn(5, 12, dtype=torch.float64)
    effective = _effective_weight(layer)
    old_a, old_b = a.clone(), b.clone()
    old_pool_a, old_pool_b = pool.candidates_A.clone(), pool.candidates_B.clone()

    rows = layer.switch_rows_of_A("default", 2, freeze_steps=3)
    assert rows.tolist() == [0, 1]
    # Rows 0, 1 now hold the slots after the window's last one (size − 1): slots 0 and 1; their old values went
    # back into their own slots size − 4, size − 3.
    torch.testing.assert_close(a[:2], old_pool_a[[0, 1]])
    torch.testing.assert_close(pool.candidates_A[[size - 4, size - 3]], old_a[:2])
    torch.testing.assert_close(a[2:], old_a[2:])
    assert pool.slots_A.tolist() == [0, 1, size - 2, size - 1] and int(pool.pointer_A) == 2
    assert pool.frozen_B.tolist() == [3, 3, 0, 0] and pool.frozen_A.tolist() == [0, 0, 0, 0]
    torch.testing.assert_close(_effective_weight(layer), effective, rtol=0, atol=1e-6)
    torch.testing.assert_close(x @ _effective_weight(layer).T, x @ effective.T, rtol=0, atol=1e-5)

    columns = layer.switch_columns_of_B("default", 2, freeze_steps=3)
    assert columns.tolist() == [2, 3]  # B's pointer starts at r/2
    torch.testing.assert_close(b[:, 2:], old_pool_b[[0, 1]].T)
    torch.testing.assert_close(b[:, :2], old_b[:, :2])
    # B's window started at column 2 with slot size − 4: columns 2, 3 gave slots size − 4, size − 3 back.
    assert pool.slots_B.tolist() == [size - 2, size - 1, 0, 1]
    torch.testing.assert_close(pool.candidates_B[[size - 4, size - 3]], old_b[:, 2:].T)
    assert pool.frozen_A.tolist() == [0, 0, 3, 3]
    torch.testing.assert_close(_effective_weight(layer), effective, rtol=0, atol=1e-6)

    # Frozen vectors are never chosen: A's pointer is at 2, and rows 2 and 3 are frozen.
    before = _effective_weight(layer)
    assert layer.switch_rows_of_A("default", 2, freeze_steps=3).numel() == 0
    assert layer.switch_columns_of_B("default", 1, freeze_steps=3).numel() == 0  # B's pointer 0: frozen
    torch.testing.assert_close(_effective_weight(layer), before, rtol=0, atol=0)
    for _ in range(3):
        layer.mask_frozen_gradients("default")
    assert pool.frozen_A.tolist() == [0, 0, 0, 0] and pool.frozen_B.tolist() == [0, 0, 0, 0]
    assert layer.switch_rows_of_A("default", 2, freeze_steps=3).tolist() == [2, 3]
    torch.testing.assert_close(_effective_weight(layer), effective, rtol=0, atol=1e-6)


@torch.no_grad()
def test_a_run_of_switches_stops_at_the_first_frozen_vector():
    _, layer = _one_layer(r=4)
    pool = layer.switchlora_pool["default"]
    pool.frozen_A[2] = 1
    assert layer.switch_rows_of_A("default", 4, freeze_steps=1).tolist() == [0, 1]
