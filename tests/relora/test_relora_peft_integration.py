"""ReLoRA through peft's public API: registration, factor init, save/load, merge_and_unload, Trainer hook."""

import json
import math

import torch
from peft import PeftModel, PeftType, get_peft_model
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from relora_helpers import tiny_llama
from transformers import Trainer, TrainingArguments

from hf_pept.relora import ReLoRACallback, ReLoRAConfig, ReLoRAModel
from hf_pept.relora.callback import install_trainer_hook
from hf_pept.relora.registration import register

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))


def _model(**kwargs):
    config = {"r": 4, "relora_steps": 10, "restart_warmup_steps": 2, "lora_dropout": 0.0, **kwargs}
    return get_peft_model(tiny_llama(), ReLoRAConfig(**config))


def _randomize_factors(model):
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for param in model.base_model.factor_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


def test_registered_with_peft_and_idempotent():
    register()
    register()
    assert PeftType.RELORA == "RELORA" and PeftType("RELORA") is PeftType.RELORA
    assert PEFT_TYPE_TO_CONFIG_MAPPING["RELORA"] is ReLoRAConfig
    assert PEFT_TYPE_TO_TUNER_MAPPING[PeftType.RELORA] is ReLoRAModel
    assert ReLoRAConfig().peft_type is PeftType.RELORA


def test_default_targets_are_all_linear_layers_but_the_head_and_factors_start_as_lora():
    model = _model()
    names = sorted(name.rsplit(".", 1)[-1] for name, _ in model.base_model.relora_layers())
    assert set(names) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert len(names) == 14  # 7 per layer, 2 layers; lm_head is left alone
    for _, layer in model.base_model.relora_layers():
        lora_A, lora_B = layer.relora_A["default"].weight, layer.relora_B["default"].weight
        bound = 1 / math.sqrt(layer.in_features)  # kaiming_uniform_(a=√5) on fan_in
        assert lora_A.abs().max() <= bound and lora_A.abs().max() > 0.5 * bound
        assert torch.count_nonzero(lora_B) == 0
        assert lora_A.requires_grad and lora_B.requires_grad
        assert not layer.get_base_layer().weight.requires_grad


def test_b_gets_a_gradient_in_the_first_step():
    # The reference ReLoRA code zero-initialises both factors, so no factor ever receives a gradient.
    model = _model()
    model(input_ids=TOKENS, labels=TOKENS).loss.backward()
    grads = [layer.relora_B["default"].weight.grad for _, layer in model.base_model.relora_layers()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)


def test_save_pretrained_writes_relora_and_from_pretrained_restores_merged_weights(tmp_path):
    model = _model()
    _randomize_factors(model)
    model.base_model.merge_and_reinit(step=1)  # base weights now differ from a fresh tiny_llama()
    _randomize_factors(model)
    with torch.no_grad():
        expected = model(input_ids=TOKENS).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "RELORA"

    loaded = PeftModel.from_pretrained(tiny_llama(), tmp_path)
    assert isinstance(loaded.base_model, ReLoRAModel)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)
        unloaded = loaded.merge_and_unload()
        assert not any("relora" in name for name, _ in unloaded.named_modules())
        torch.testing.assert_close(unloaded(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)


def test_without_base_weights_the_adapter_is_lora_sized(tmp_path):
    model = _model(save_base_weights=False)
    model.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    keys = load_file(tmp_path / "adapter_model.safetensors").keys()
    assert keys and all("relora_A" in key or "relora_B" in key for key in keys)


def test_stock_trainer_gets_exactly_one_callback(tmp_path):
    install_trainer_hook()  # idempotent: a second install must not double the callback
    args = TrainingArguments(tmp_path, report_to=[], use_cpu=True, max_steps=1)
    data = [{"input_ids": TOKENS[0], "labels": TOKENS[0]}]
    trainer = Trainer(model=_model(), args=args, train_dataset=data)
    assert sum(isinstance(cb, ReLoRACallback) for cb in trainer.callback_handler.callbacks) == 1
    explicit = Trainer(model=_model(), args=args, train_dataset=data, callbacks=[ReLoRACallback()])
    assert sum(isinstance(cb, ReLoRACallback) for cb in explicit.callback_handler.callbacks) == 1
    plain = Trainer(model=tiny_llama(), args=args, train_dataset=data)
    assert not any(isinstance(cb, ReLoRACallback) for cb in plain.callback_handler.callbacks)
