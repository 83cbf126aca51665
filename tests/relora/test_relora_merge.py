"""merge_and_reinit against the full-weight computation W + (α/r)·B·A written out here."""

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from relora_helpers import tiny_llama

from hf_pept.relora import ReLoRAConfig

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def _trained_looking_model(lora_alpha=8.0, r=4):
    model = get_peft_model(
        tiny_llama(),
        ReLoRAConfig(r=r, lora_alpha=lora_alpha, lora_dropout=0.0, relora_steps=10, restart_warmup_steps=2),
    )
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.base_model.factor_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return model


def test_merge_equals_full_weight_formula_in_place_and_keeps_the_output():
    model = _trained_looking_model(lora_alpha=8.0, r=4)
    layers = dict(model.base_model.relora_layers())
    before = {}
    for name, layer in layers.items():
        W = layer.get_base_layer().weight
        A, B = layer.relora_A["default"].weight, layer.relora_B["default"].weight
        # ReLoRA eq. 2 with s = α / r, in float64.
        before[name] = (W, A, B, W.data_ptr(), W.double() + (8.0 / 4) * (B.double() @ A.double()), A.detach().clone())
    with torch.no_grad():
        output_before = model(input_ids=TOKENS).logits

    assert model.base_model.merge_and_reinit(step=7) == len(layers)

    for name, layer in layers.items():
        W, A, B, pointer, expected, old_A = before[name]
        assert layer.get_base_layer().weight is W and W.data_ptr() == pointer
        assert layer.relora_A["default"].weight is A and layer.relora_B["default"].weight is B
        torch.testing.assert_close(W.double(), expected, rtol=1e-6, atol=1e-6)
        assert torch.count_nonzero(B) == 0
        bound = 1 / math.sqrt(layer.in_features)
        assert 0.5 * bound < A.abs().max() <= bound and not torch.equal(A, old_A)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=TOKENS).logits, output_before, rtol=1e-5, atol=1e-5)


def test_reinit_depends_only_on_seed_and_step():
    first, second = _trained_looking_model(), _trained_looking_model()
    first.base_model.merge_and_reinit(step=30)
    second.base_model.merge_and_reinit(step=30)
    for a, b in zip(first.base_model.factor_parameters(), second.base_model.factor_parameters()):
        assert torch.equal(a, b)
    third = _trained_looking_model()
    third.base_model.merge_and_reinit(step=31)
    assert not torch.equal(first.base_model.factor_parameters()[0], third.base_model.factor_parameters()[0])


def test_peft_merge_and_unmerge_round_trip():
    model = _trained_looking_model()
    layer = next(layer for _, layer in model.base_model.relora_layers())
    W = layer.get_base_layer().weight
    original = W.detach().clone()
    A, B = layer.relora_A["default"].weight, layer.relora_B["default"].weight
    expected = original.double() + (8.0 / 4) * (B.double() @ A.double())
    layer.merge()
    torch.testing.assert_close(W.double(), expected, rtol=1e-6, atol=1e-6)
    layer.unmerge()
    torch.testing.assert_close(W, original, rtol=0, atol=1e-5)


def test_a_non_finite_safe_merge_raises_in_peft_lora_words_and_merges_nothing():
    lora = get_peft_model(tiny_llama(), LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    lora_layer = lora.base_model.model.model.layers[0].self_attn.q_proj
    with torch.no_grad():
        lora_layer.lora_B["default"].weight[0, 0] = float("nan")
    with pytest.raises(ValueError) as reference:
        lora_layer.merge(safe_merge=True)

    model = _trained_looking_model()
    layer = next(layer for _, layer in model.base_model.relora_layers())
    weight = layer.get_base_layer().weight
    original = weight.detach().clone()
    with torch.no_grad():
        layer.relora_B["default"].weight[0, 0] = float("inf")
    with pytest.raises(ValueError) as error:
        layer.merge(safe_merge=True)
    assert str(error.value) == str(reference.value)
    assert str(error.value) == "NaNs detected in the merged weights. The adapter default seems to be broken"
    assert torch.equal(weight, original) and not layer.merged
