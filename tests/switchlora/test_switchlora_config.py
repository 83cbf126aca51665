"""Bad input is refused before any training, with the value and what would be valid."""

import pytest
import torch
from peft import get_peft_model
from switchlora_helpers import OneLinear, tiny_llama, token_dataset
from transformers import Trainer, TrainingArguments

from hf_pept.galore import GaLoreAdamW
from hf_pept.switchlora import SwitchLoRAConfig, SwitchLoRAStepper


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"r": -3}, "r must be a positive integer, got -3"),
        ({"switch_interval": 10, "freeze_steps": 5}, r"freeze_steps \(5\) must be below switch_interval / 2"),
        ({"switch_interval": 40, "freeze_steps": 25}, r"freeze_steps \(25\) must be below"),
        ({"freeze_steps": -1}, "freeze_steps must be an integer >= 0"),
        ({"switch_interval": 0}, "switch_interval must be an integer >= 1"),
        ({"switch_descent_rate": 0.0}, "switch_descent_rate must be > 0"),
        ({"lora_alpha": 0}, "lora_alpha must be > 0"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"init_lora_weights": "gaussian"}, "init_lora_weights must be one of"),
        ({"bias": "lora_only"}, "bias must be one of"),
    ],
)
def test_bad_knobs_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SwitchLoRAConfig(**kwargs)


def test_freeze_just_below_half_the_interval_is_accepted():
    assert SwitchLoRAConfig(switch_interval=11, freeze_steps=5).freeze_steps == 5
    assert SwitchLoRAConfig(freeze_steps=0).freeze_steps == 0


def test_target_modules_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(tiny_llama(), SwitchLoRAConfig(r=4, target_modules=["no_such_proj"]))


def test_default_targets_are_the_attention_and_mlp_linears():
    model = get_peft_model(tiny_llama(), SwitchLoRAConfig(r=4))
    names = [name for name, _ in model.base_model.switchlora_layers()]
    assert len(names) == 14 and not any("lm_head" in name for name in names)
    assert {name.rsplit(".", 1)[-1] for name in names} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    }  # fmt: skip
    with pytest.raises(ValueError, match="has none; pass target_modules explicitly"):
        get_peft_model(OneLinear(), SwitchLoRAConfig(r=4))


def test_rank_must_leave_candidates_beyond_the_active_vectors():
    # proj is 12 → 10: a pool of min(10, 12) = 10 vectors per side, so r = 10 leaves nothing to switch to.
    with pytest.raises(ValueError, match=r"r \(10\) must be below min\(in_features, out_features\) = 10"):
        get_peft_model(OneLinear(), SwitchLoRAConfig(r=10, target_modules=["proj"]))


def test_a_galore_optim_fails_at_trainer_construction(tmp_path):
    model = get_peft_model(tiny_llama(), SwitchLoRAConfig(r=4))
    args = TrainingArguments(
        tmp_path, optim="galore_adamw", optim_target_modules=["q_proj"], use_cpu=True, report_to=[], max_steps=1
    )
    with pytest.raises(ValueError, match="GaLore.*SwitchLoRA model trains low-rank factors"):
        Trainer(model=model, args=args, train_dataset=token_dataset(n=4))


def test_a_galore_optimizer_or_one_without_the_factors_is_refused_by_the_stepper():
    model = get_peft_model(OneLinear(), SwitchLoRAConfig(r=4, target_modules=["proj"]))
    factors = model.base_model.factor_parameters()
    with pytest.raises(ValueError, match="GaLore optimizer projects full-rank gradients"):
        SwitchLoRAStepper(model, GaLoreAdamW(factors, lr=1e-3), total_steps=10)
    with pytest.raises(ValueError, match="does not hold 1 of the SwitchLoRA factors"):
        SwitchLoRAStepper(model, torch.optim.AdamW(factors[:1], lr=1e-3), total_steps=10)
    with pytest.raises(ValueError, match="total optimizer steps T >= 1"):
        SwitchLoRAStepper(model, torch.optim.AdamW(factors, lr=1e-3), total_steps=0)
