"""ReLoRA inside the stock Trainer with no extra lines: restarts, events, jagged LR, warm start, exact resume."""

import pytest
import torch
from peft import get_peft_model
from relora_helpers import tiny_llama, token_dataset
from transformers import Trainer, get_constant_schedule
from tuner_helpers import training_args

from hf_pept.relora import ReLoRAConfig, ReLoRAStepper


def _relora(**kwargs):
    config = {"r": 4, "relora_steps": 4, "restart_warmup_steps": 2, "modules_to_save": ["embed_tokens", "lm_head"]}
    return get_peft_model(tiny_llama(), ReLoRAConfig(**{**config, **kwargs}))


def _args(output_dir, **kwargs):
    return training_args(output_dir, **{"max_steps": 12, **kwargs})


def _records(history, key):
    return {r["step"]: r for r in history if key in r}


def test_stock_trainer_merges_resets_and_logs_the_jagged_lr(tmp_path):
    model = _relora()
    weight = next(layer for _, layer in model.base_model.relora_layers()).get_base_layer().weight
    snapshots = {}

    class Snapshot:  # records W after each step, through the public callback interface
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def on_step_end(self, args, state, control, **kwargs):
            snapshots[state.global_step] = weight.detach().clone()

    trainer = Trainer(model=model, args=_args(tmp_path), train_dataset=token_dataset())
    trainer.add_callback(Snapshot())
    trainer.train()
    history = trainer.state.log_history

    assert [r["step"] for r in history if r.get("event") == "relora_merge"] == [4, 8, 12]
    resets = [r for r in history if r.get("event") == "optimizer_reset"]
    assert [r["step"] for r in resets] == [4, 8, 12] and all(r["mode"] == "magnitude" for r in resets)
    # At least 90 % of each moment (up to per-tensor rounding), more where m lost its pruned v.
    assert all(0.9 * r["entries"] - 14 * 2 * 2 <= r["zeroed"] <= r["entries"] for r in resets)
    # W changes only at merges (the snapshot callback runs after the ReLoRA one).
    changed = [s for s in range(2, 13) if not torch.equal(snapshots[s], snapshots[s - 1])]
    assert changed == [4, 8, 12]
    # Logged LR (the LR each step ran with): constant 1e-2, 0 right after a restart, (t − t_k)/2 after.
    lr = {s: r["learning_rate"] for s, r in _records(history, "learning_rate").items()}
    expected = {1: 1, 4: 1, 5: 0, 6: 0.5, 7: 1, 8: 1, 9: 0, 10: 0.5, 11: 1}
    assert {s: lr[s] / 1e-2 for s in expected} == pytest.approx(expected)


def test_warm_start_trains_weights_full_rank_then_freezes_them(tmp_path):
    model = _relora(warm_start_steps=3, relora_steps=5)
    layers = [layer for _, layer in model.base_model.relora_layers()]
    assert all(layer.get_base_layer().weight.requires_grad for layer in layers)
    weight = layers[0].get_base_layer().weight
    factor = layers[0].relora_A["default"].weight
    snapshots = {}

    class Snapshot:
        def __getattr__(self, name):
            return lambda *args, **kwargs: None

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            snapshots[state.global_step] = (
                weight.detach().clone(),
                weight in optimizer.state,
                factor in optimizer.state,
            )

    trainer = Trainer(model=model, args=_args(tmp_path, max_steps=9), train_dataset=token_dataset())
    trainer.add_callback(Snapshot())
    trainer.train()
    changed = [s for s in range(2, 10) if not torch.equal(snapshots[s][0], snapshots[s - 1][0])]
    # Steps 2, 3 are full-rank updates of W; step 3 also merges; then W changes only at the merge at 3 + 5 = 8.
    assert changed == [2, 3, 8]
    assert snapshots[2][1] and not snapshots[3][1] and not snapshots[9][1]  # W's moments freed at the switch
    assert not snapshots[3][2] and snapshots[4][2]  # factors restart with fresh state
    assert not weight.requires_grad and factor.requires_grad
    events = [(r["step"], r["event"]) for r in trainer.state.log_history if "event" in r]
    assert events == [(3, "relora_merge"), (3, "optimizer_reset"), (8, "relora_merge"), (8, "optimizer_reset")]


def _losses(history):
    return {r["step"]: r["loss"] for r in history if "loss" in r and "train_loss" not in r}


@pytest.mark.parametrize("resume_step", [1, 5])
def test_resume_across_a_merge_gives_the_same_loss_curve(tmp_path, resume_step):
    # Warm start ends at 2, merges at 6 and 10; resuming from 1 crosses the switch, from 5 a merge.
    config = {"warm_start_steps": 2, "optimizer_reset": "random", "prune_ratio": 0.5}
    args = {"save_strategy": "steps", "save_steps": 1, "lr_scheduler_type": "cosine"}
    full = Trainer(model=_relora(**config), args=_args(tmp_path / "a", **args), train_dataset=token_dataset())
    full.train()
    resumed = Trainer(model=_relora(**config), args=_args(tmp_path / "b", **args), train_dataset=token_dataset())
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / f"checkpoint-{resume_step}"))
    expected, got = _losses(full.state.log_history), _losses(resumed.state.log_history)
    steps = range(resume_step + 1, 13)
    assert set(steps) <= set(got)
    for step in steps:
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_plain_pytorch_loop_with_the_stepper():
    model = _relora(relora_steps=3, restart_warmup_steps=1)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_constant_schedule(optimizer)
    relora = ReLoRAStepper(model, optimizer, scheduler)
    data = token_dataset(n=24)
    events, lrs = [], []
    for start in range(0, 24, 4):
        batch = torch.stack([row["input_ids"] for row in data[start : start + 4]])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        events += [(relora.global_step, e["event"]) for e in relora.step()]
        lrs.append(optimizer.param_groups[0]["lr"])
    assert events == [(3, "relora_merge"), (3, "optimizer_reset"), (6, "relora_merge"), (6, "optimizer_reset")]
    assert lrs == pytest.approx([1e-2, 1e-2, 0.0, 1e-2, 1e-2, 0.0])


def test_stepper_refuses_an_optimizer_without_the_factors():
    model = _relora()
    optimizer = torch.optim.AdamW(model.base_model.model.lm_head.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="does not hold"):
        ReLoRAStepper(model, optimizer)
