"""ReLoRAConfig validation and the errors a user gets before training starts."""

import re

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
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


STR_TARGETS = ["all-linear", r".*\.(q_proj|v_proj)"]


@pytest.mark.parametrize("target_modules", STR_TARGETS)
@pytest.mark.parametrize(
    "layers", [{"layers_to_transform": [0]}, {"layers_to_transform": 1, "layers_pattern": "layers"}], ids=str
)
def test_layers_with_a_str_target_modules_is_refused_as_peft_lora_does(target_modules, layers):
    """peft matches a str target_modules as one regex without its layer filter: every layer would be adapted."""
    peft_words = "`layers_to_transform` cannot be used when `target_modules` is a str"
    with pytest.raises(ValueError, match=re.escape(peft_words)):
        LoraConfig(target_modules=target_modules, **layers)  # the reference
    with pytest.raises(ValueError, match=re.escape(peft_words)) as error:
        ReLoRAConfig(target_modules=target_modules, **layers)
    assert "target_modules=None" in str(error.value)


def _adapted(peft_model):
    """Names (in the base model) of the adapted modules."""
    model = peft_model.get_base_model()
    return sorted(name for name, module in model.named_modules() if isinstance(module, BaseTunerLayer))


@pytest.mark.parametrize(
    "layers", [{"layers_to_transform": [1]}, {"layers_to_transform": 1, "layers_pattern": "layers"}]
)
def test_listed_target_modules_with_layers_to_transform_adapt_those_layers_only_as_lora_does(layers):
    targets = ["q_proj", "v_proj", "down_proj"]
    relora = get_peft_model(tiny_llama(layers=3), ReLoRAConfig(r=2, target_modules=targets, **layers))
    lora = get_peft_model(tiny_llama(layers=3), LoraConfig(r=2, target_modules=targets, **layers))
    expected = [f"model.layers.1.{m}" for m in ("mlp.down_proj", "self_attn.q_proj", "self_attn.v_proj")]
    assert _adapted(relora) == _adapted(lora) == expected


def test_default_target_modules_with_layers_to_transform_adapt_every_linear_layer_of_those_layers(tmp_path):
    base = tiny_llama(layers=3)
    expected = sorted(
        name
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and re.match(r"model\.layers\.[02]\.", name)
    )
    assert len(expected) == 14  # 7 projections in each of layers 0 and 2
    model = get_peft_model(
        base, ReLoRAConfig(r=2, layers_to_transform=[0, 2], relora_steps=10, restart_warmup_steps=2)
    )
    assert _adapted(model) == expected
    model.save_pretrained(tmp_path)
    assert _adapted(PeftModel.from_pretrained(tiny_llama(layers=3), tmp_path)) == expected


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
