"""SwitchLoRA inside the stock Trainer with no extra lines: switches and their events, exact resume across switches,
save / load / merge."""

import json

import pytest
import torch
from peft import PeftModel, get_peft_model
from safetensors.torch import load_file
from switchlora_helpers import tiny_llama, token_dataset
from transformers import Trainer
from tuner_helpers import training_args

from hf_pept.switchlora import CandidatePool, SwitchLoRACallback, SwitchLoRAConfig, SwitchLoRAModel

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(3))
# r = 4 and interval₀ = 12: k̄ = 1/3 per layer and side at first; a descent rate of 10 keeps it there for the few
# steps of a test, so several of the 14 layers switch at every step and vectors are frozen at every checkpoint.
KNOBS = {"r": 4, "switch_interval": 12, "freeze_steps": 2, "switch_descent_rate": 10.0}


def _switchlora(**kwargs):
    config = {**KNOBS, "modules_to_save": ["embed_tokens", "lm_head"], **kwargs}
    return get_peft_model(tiny_llama(), SwitchLoRAConfig(**config))


def _args(output_dir, **kwargs):
    return training_args(output_dir, **{"lr_scheduler_type": "cosine", "optim": "adamw_torch", **kwargs})


def _pools(model):
    return {name: pool for name, pool in model.named_modules() if isinstance(pool, CandidatePool)}


def _switch_state(model):
    return {
        f"{name}.{key}": getattr(pool, key).clone() for name, pool in _pools(model).items() for key in pool.TENSORS
    }


def test_stock_trainer_switches_and_logs_each_switch(tmp_path):
    model = _switchlora()
    slots = {}

    class Snapshot:  # after each step, through the public callback interface (it runs after SwitchLoRA's)
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def on_step_end(self, args, state, control, **kwargs):
            slots[state.global_step] = torch.cat([torch.cat([p.slots_A, p.slots_B]) for p in _pools(model).values()])

    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=token_dataset())
    assert sum(isinstance(cb, SwitchLoRACallback) for cb in trainer.callback_handler.callbacks) == 1
    slots[0] = torch.cat([torch.cat([p.slots_A, p.slots_B]) for p in _pools(model).values()])
    trainer.add_callback(Snapshot())
    trainer.train()
    events = {r["step"]: r for r in trainer.state.log_history if r.get("event") == "switchlora_switch"}
    assert len(events) >= 6  # ~4.7 layers per step switch with these knobs
    # Each event counts the vectors whose pool slot changed at that step (an independent count from the state).
    changed = {s: int((slots[s] != slots[s - 1]).sum()) for s in range(1, 9)}
    assert {s: e["vectors"] for s, e in events.items()} == {s: n for s, n in changed.items() if n}
    assert all(0 < e["layers"] <= 14 for e in events.values())


def _losses(history):
    return {r["step"]: r["loss"] for r in history if "loss" in r and "train_loss" not in r}


def test_resume_across_switches_follows_the_uninterrupted_run(tmp_path):
    args = {"save_strategy": "steps", "save_steps": 4}
    full = Trainer(model=_switchlora(), args=_args(tmp_path / "a", **args), train_dataset=token_dataset())
    full.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"
    # Everything the switches need is in the checkpoint, as tensors: pools, slots, pointers, freeze counters.
    saved = load_file(checkpoint / "adapter_model.safetensors")
    assert any(key.endswith("switchlora_pool.candidates_A") for key in saved)
    assert any(key.endswith("switchlora_pool.frozen_B") and torch.count_nonzero(v) for key, v in saved.items())
    assert any(key.endswith("base_layer.weight") for key in saved)  # switches fold into W
    torch.load(checkpoint / "optimizer.pt", weights_only=True)
    resumed = Trainer(model=_switchlora(), args=_args(tmp_path / "b", **args), train_dataset=token_dataset())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    switched_after = [r["step"] for r in resumed.state.log_history if r.get("event") == "switchlora_switch"]
    assert [s for s in switched_after if s > 4]  # the resumed part switched too
    expected, got = _losses(full.state.log_history), _losses(resumed.state.log_history)
    for step in range(5, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step
    for (name, a), b in zip(full.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    state_full, state_resumed = _switch_state(full.model), _switch_state(resumed.model)
    for key in state_full:
        torch.testing.assert_close(state_resumed[key], state_full[key], rtol=1e-6, atol=1e-7, msg=key)


def test_save_pretrained_from_pretrained_and_merge_and_unload(tmp_path):
    model = _switchlora()
    Trainer(model=model, args=_args(tmp_path / "run", max_steps=3), train_dataset=token_dataset()).train()
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=TOKENS).logits
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["peft_type"] == "SWITCHLORA"

    loaded = PeftModel.from_pretrained(tiny_llama(seed=1), tmp_path / "adapter")  # other base weights
    assert isinstance(loaded.base_model, SwitchLoRAModel)
    state, state_loaded = _switch_state(model), _switch_state(loaded)
    assert state.keys() == state_loaded.keys()
    for key in state:
        assert torch.equal(state[key], state_loaded[key]), key
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)
        merged = loaded.merge_and_unload()
        assert not any("switchlora" in name for name, _ in merged.named_modules())
        assert type(merged).__name__ == "LlamaForCausalLM"
        torch.testing.assert_close(merged(input_ids=TOKENS).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("offload", [True, False])
def test_on_cuda_offloaded_pools_stay_in_host_memory(offload):
    from hf_pept.switchlora import SwitchLoRAStepper

    model = _switchlora(offload_candidates=offload).cuda()
    # Zero gradients, zero moments and no weight decay: AdamW changes nothing, only the switches change the weights.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    stepper = SwitchLoRAStepper(model, optimizer, total_steps=6)
    ids = TOKENS.cuda()
    with torch.no_grad():
        before = model(input_ids=ids).logits
    switched = 0
    for _ in range(6):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.zero_grad(set_to_none=False)
        switched += (stepper.before_optimizer_step() or {}).get("vectors", 0)
        optimizer.step()
        stepper.after_optimizer_step()
    assert switched > 0
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-4, atol=1e-4)
    pools = list(_pools(model).values())
    assert all(p.candidates_A.device.type == ("cpu" if offload else "cuda") for p in pools)
    assert all(p.slots_A.device.type == "cpu" and p.frozen_B.device.type == "cpu" for p in pools)
