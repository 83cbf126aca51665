"""ReLoRAConfig validation and the errors a user gets before training starts."""

import pytest
import torch
from peft import get_peft_model
from relora_helpers import tiny_llama
from transformers import Trainer, TrainingArguments

from hf_pept.relora import ReLoRAConfig


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be a positive integer"),
        ({"r": -4}, "r must be a positive integer"),
        ({"relora_steps": 50, "restart_warmup_steps": 50}, r"relora_steps \(50\) must be larger"),
        ({"relora_steps": 10, "restart_warmup_steps": 20}, r"relora_steps \(10\) must be larger"),
        ({"prune_ratio": 1.0}, r"prune_ratio must be in \[0, 1\)"),
        ({"prune_ratio": -0.1}, r"prune_ratio must be in \[0, 1\)"),
        ({"optimizer_reset": "random", "prune_ratio": 1.5}, r"prune_ratio must be in \[0, 1\)"),
        ({"optimizer_reset": "zero", "prune_ratio": 0.5}, "has no effect with optimizer_reset='zero'"),
        ({"optimizer_reset": "half"}, "optimizer_reset must be one of"),
        ({"warm_start_steps": -1}, "warm_start_steps must be a non-negative integer"),
        ({"bias": "some"}, "bias must be one of"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
    ],
)
def test_bad_values_raise_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ReLoRAConfig(**kwargs)


@pytest.mark.parametrize(("mode", "expected"), [("magnitude", 0.9), ("random", 0.999), ("zero", None), ("none", None)])
def test_prune_ratio_default_follows_the_reset_mode(mode, expected):
    assert ReLoRAConfig(optimizer_reset=mode).prune_ratio == expected


def test_target_modules_matching_nothing_is_an_error():
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(tiny_llama(), ReLoRAConfig(r=4, target_modules=["no_such_proj"]))


def test_non_linear_target_is_an_error():
    with pytest.raises(TypeError, match="torch.nn.Linear layers only"):
        get_peft_model(tiny_llama(), ReLoRAConfig(r=4, target_modules=["embed_tokens"]))


def test_relora_model_with_a_galore_optim_fails_at_trainer_construction(tmp_path):
    model = get_peft_model(tiny_llama(), ReLoRAConfig(r=4, relora_steps=10, restart_warmup_steps=2))
    args = TrainingArguments(tmp_path, optim="galore_adamw", report_to=[], use_cpu=True, max_steps=1)
    with pytest.raises(ValueError, match="GaLore"):
        Trainer(model=model, args=args, train_dataset=[{"input_ids": torch.zeros(4, dtype=torch.long)}])


def test_relora_with_a_plateau_scheduler_fails_at_trainer_construction(tmp_path):
    model = get_peft_model(tiny_llama(), ReLoRAConfig(r=4, relora_steps=10, restart_warmup_steps=2))
    args = TrainingArguments(
        tmp_path, lr_scheduler_type="reduce_lr_on_plateau", eval_strategy="steps", report_to=[], use_cpu=True
    )
    with pytest.raises(ValueError, match="jagged restarts need a LambdaLR"):
        data = [{"input_ids": torch.zeros(4, dtype=torch.long)}]
        Trainer(model=model, args=args, train_dataset=data, eval_dataset=data)
