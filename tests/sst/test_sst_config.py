"""SSTConfig through peft: registration, save/load, one callback per Trainer; bad input refused before training."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from peft.utils import PeftType
from sst_helpers import TOKENS, sst_layers, sst_model, tiny_llama, token_dataset
from transformers import Trainer, TrainingArguments

from hf_pept import run_args
from hf_pept.sst import SSTCallback, SSTConfig, SSTModel
from hf_pept.sst.callback import install_trainer_hook


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"r": 0}, "r must be an integer >= 1"),
        ({"r": -2}, "r must be an integer >= 1"),
        ({"iteration_steps": 0}, "iteration_steps"),
        ({"iteration_steps": 20, "iteration_warmup_steps": 20}, "must be smaller than iteration_steps"),
        ({"round_iterations": 0}, "round_iterations"),
        ({"sampling": "top"}, "sampling must be one of"),
        ({"enhanced_gradient": "yes"}, "enhanced_gradient"),
        ({"target_parameters": ["weight"]}, "target_parameters"),
    ],
)
def test_bad_values_raise_naming_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SSTConfig(**kwargs)


@pytest.mark.parametrize("r", [32, 40])
def test_r_not_below_min_out_in_is_refused_naming_the_layer(r):
    with pytest.raises(ValueError, match=r"self_attn.q_proj: r must satisfy 0 < r < min\(out, in\) = 32"):
        get_peft_model(tiny_llama(), SSTConfig(r=r))


def test_target_modules_matching_nothing_and_non_linear_targets_are_errors():
    with pytest.raises(ValueError, match="not found in the base model"):
        get_peft_model(tiny_llama(), SSTConfig(r=4, target_modules=["nonexistent_proj"]))
    with pytest.raises(TypeError, match="torch.nn.Linear layers only"):
        get_peft_model(tiny_llama(), SSTConfig(r=4, target_modules=["embed_tokens"]))


def test_hf_pept_train_refuses_a_rank_at_the_hidden_size_before_any_work():
    run = run_args.RunArguments(method="sst", model="tiny")
    with pytest.raises(ValueError, match="rank 64 must be smaller than min"):
        run_args.prepare(run, run_args.LowRankArguments(rank=64))
    prepared = run_args.prepare(run)
    assert prepared.config.r == 16 and prepared.config.sample_seed == run.seed


def test_trainer_refuses_a_galore_optim_and_a_plateau_scheduler_at_construction(tmp_path):
    data = token_dataset(n=4)
    with pytest.raises(ValueError, match="GaLore"):
        args = TrainingArguments(tmp_path, report_to=[], use_cpu=True, optim="galore_adamw", max_steps=1)
        Trainer(model=sst_model(), args=args, train_dataset=data)
    plateau = {"lr_scheduler_type": "reduce_lr_on_plateau", "eval_strategy": "steps"}
    args = TrainingArguments(tmp_path, report_to=[], use_cpu=True, **plateau)
    with pytest.raises(ValueError, match="not step-based"):
        Trainer(model=sst_model(), args=args, train_dataset=data, eval_dataset=data)
    Trainer(model=sst_model(iteration_warmup_steps=0), args=args, train_dataset=data, eval_dataset=data)  # fine


def test_registered_with_peft_and_saved_adapters_restore_the_trained_model(tmp_path):
    assert PeftType.SST == "SST"
    model = sst_model()
    with torch.no_grad():  # a trained state: other Σ, moved vectors, another active set
        for layer in sst_layers(model):
            layer.sst_sigma["default"].mul_(1.5)
            layer.sst_V_active["default"].add_(0.1)
    model.base_model.resample(step=7)
    with torch.no_grad():
        expected = model(input_ids=TOKENS).logits
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "SST"

    loaded = PeftModel.from_pretrained(tiny_llama(seed=9), tmp_path)  # other random weights underneath
    assert isinstance(loaded.base_model, SSTModel)
    for ours, theirs in zip(sst_layers(model), sst_layers(loaded)):
        assert torch.equal(ours.sst_active_index["default"], theirs.sst_active_index["default"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)
        unloaded = loaded.merge_and_unload()
        assert not any("sst" in name for name, _ in unloaded.named_modules())
        torch.testing.assert_close(unloaded(input_ids=TOKENS).logits, expected, rtol=1e-4, atol=1e-5)


def test_stock_trainer_gets_exactly_one_callback(tmp_path):
    install_trainer_hook()  # idempotent: a second install must not double the callback
    args = TrainingArguments(tmp_path, report_to=[], use_cpu=True, max_steps=1)
    data = token_dataset(n=2)
    trainer = Trainer(model=sst_model(), args=args, train_dataset=data)
    assert sum(isinstance(cb, SSTCallback) for cb in trainer.callback_handler.callbacks) == 1
    explicit = Trainer(model=sst_model(), args=args, train_dataset=data, callbacks=[SSTCallback()])
    assert sum(isinstance(cb, SSTCallback) for cb in explicit.callback_handler.callbacks) == 1
    plain = Trainer(model=tiny_llama(), args=args, train_dataset=data)
    assert not any(isinstance(cb, SSTCallback) for cb in plain.callback_handler.callbacks)


def test_a_second_adapter_is_refused():
    model = sst_model()
    with pytest.raises(ValueError, match="single adapter"):
        model.add_adapter("other", SSTConfig(r=4))
