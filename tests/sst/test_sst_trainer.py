"""SST inside the stock Trainer with no extra lines, and in a plain loop: what changes in a step, the events and the
per-iteration warm-up, the optimizer-state restart at a swap, skipped steps, exact resume."""

import pytest
import torch
from sst_helpers import sst_layers, sst_model, token_dataset, training_args
from transformers import Trainer, TrainerCallback, get_constant_schedule

from hf_pept.divergence import DivergenceGuard
from hf_pept.sst import SSTCallback, SSTStepper


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()] if "sst_" in n}


def test_a_step_moves_sigma_and_the_active_vectors_only_keeps_sigma_nonnegative_and_columns_unit():
    model = sst_model(iteration_steps=10, iteration_warmup_steps=0)
    layers = sst_layers(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    stepper = SSTStepper(model, optimizer)
    batch = torch.stack([row["input_ids"] for row in token_dataset(n=4)])
    model(input_ids=batch, labels=batch).loss.backward()
    sigma = layers[0].sst_sigma["default"]
    pushed = int(sigma.grad.argmax())  # Adam's first update moves it by −lr: set it to 1e-6 and it would go below 0
    assert sigma.grad[pushed] > 0
    with torch.no_grad():
        sigma[pushed] = 1e-6
    before = _snapshot(model)
    optimizer.step()
    assert stepper.step() == []
    after = _snapshot(model)
    for name, value in after.items():
        changed = not torch.equal(value, before[name])
        if "frozen" in name or "index" in name:
            assert not changed, name  # frozen columns and the partition stay as they were
        else:
            assert changed, name
    for layer in layers:
        assert layer.sst_sigma["default"].min() >= 0
        for part in (layer.sst_U_active["default"], layer.sst_V_active["default"]):
            torch.testing.assert_close(part.norm(dim=0), torch.ones(part.shape[1]))
    assert sigma[pushed] == 0  # clamped, not negative


def test_stock_trainer_resamples_resvds_restarts_state_and_warms_up(tmp_path):
    model = sst_model(iteration_steps=3, iteration_warmup_steps=2, round_iterations=2)
    layer = sst_layers(model)[0]
    seen = {}

    class Inspect(TrainerCallback):  # runs after SSTCallback (added at Trainer construction, before this one)
        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            opt_state = optimizer.state
            u, sigma = layer.sst_U_active["default"], layer.sst_sigma["default"]
            seen[state.global_step] = {
                "active": layer.sst_active_index["default"].clone(),
                "u_moment": opt_state[u]["exp_avg"].abs().sum().item(),
                "u_step": float(opt_state[u]["step"]),
                "sigma_moment": opt_state[sigma]["exp_avg"].abs().sum().item(),
            }

    trainer = Trainer(model=model, args=training_args(tmp_path, max_steps=9), train_dataset=token_dataset())
    trainer.add_callback(Inspect())
    trainer.train()
    history = trainer.state.log_history
    resamples = [r for r in history if r.get("event") == "sst_resample"]
    resvds = [r for r in history if r.get("event") == "sst_resvd"]
    assert [r["step"] for r in resamples] == [3, 6, 9] and [r["step"] for r in resvds] == [6]
    assert all(r["layers"] == 14 and r["state_restarted"] == 28 for r in resamples)
    assert resvds[0]["state_restarted"] == 14 and resvds[0]["orthogonality_error"] > 0
    # At a swap the active vectors' state is a fresh one (moments 0, step 0); Σ's survives a resample, not a re-SVD.
    for step in (3, 6, 9):
        assert seen[step]["u_moment"] == 0 and seen[step]["u_step"] == 0
    assert seen[3]["sigma_moment"] > 0 and seen[9]["sigma_moment"] > 0 and seen[6]["sigma_moment"] == 0
    assert seen[4]["u_step"] == 1 and seen[4]["u_moment"] > 0
    assert not torch.equal(seen[2]["active"], seen[3]["active"])  # new vectors (r = 4 of 32)
    # Logged LR (the LR each step ran with): 1e-2, then (t − t_k + 1)/2 right after each resample.
    lr = {r["step"]: r["learning_rate"] / 1e-2 for r in history if "learning_rate" in r}
    expected = {1: 1, 3: 1, 4: 0.5, 5: 1, 6: 1, 7: 0.5, 8: 1}
    assert {s: lr[s] for s in expected} == pytest.approx(expected)
    assert sum(isinstance(cb, SSTCallback) for cb in trainer.callback_handler.callbacks) == 1


def test_a_skipped_update_leaves_every_sst_tensor_bit_identical(tmp_path):
    model = sst_model(iteration_steps=10, iteration_warmup_steps=0)
    snapshots = {}

    class PoisonStep2(TrainerCallback):  # a NaN gradient at step 2: the guard drops every gradient
        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                next(p for p in model.parameters() if p.grad is not None).grad.fill_(float("nan"))

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            snapshots[state.global_step] = _snapshot(model)

    guard = DivergenceGuard()
    args = training_args(tmp_path, max_steps=3, max_grad_norm=0.0)
    trainer = Trainer(model=model, args=args, train_dataset=token_dataset(), callbacks=[PoisonStep2(), guard])
    trainer.add_callback(Snapshot())
    trainer.train()
    assert guard.skipped == 1
    assert all(torch.equal(snapshots[2][n], snapshots[1][n]) for n in snapshots[1])  # no projection either
    assert any(not torch.equal(snapshots[3][n], snapshots[2][n]) for n in snapshots[2])


def _losses(history):
    return {r["step"]: r["loss"] for r in history if "loss" in r and "train_loss" not in r}


def test_resume_across_a_resample_and_a_resvd_gives_the_same_run(tmp_path):
    # Resamples after steps 2, 4, 6, 8; re-SVDs after 4 and 8: resuming from 3 crosses both.
    config = {"iteration_steps": 2, "iteration_warmup_steps": 1, "round_iterations": 2}
    args = {"save_strategy": "steps", "save_steps": 3, "lr_scheduler_type": "cosine", "warmup_steps": 1}
    full = Trainer(
        model=sst_model(**config), args=training_args(tmp_path / "a", **args), train_dataset=token_dataset()
    )
    full.train()
    resumed_model = sst_model(seed=5, **config)  # another base model: the checkpoint must carry all SST state
    resumed = Trainer(model=resumed_model, args=training_args(tmp_path / "b", **args), train_dataset=token_dataset())
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-3"))
    expected, got = _losses(full.state.log_history), _losses(resumed.state.log_history)
    assert set(range(4, 9)) <= set(got)
    for step in range(4, 9):
        assert got[step] == pytest.approx(expected[step], rel=1e-6), step
    events = [(r["step"], r["event"]) for r in resumed.state.log_history if "event" in r and r["step"] > 3]
    assert events == [
        (4, "sst_resvd"),
        (4, "sst_resample"),
        (6, "sst_resample"),
        (8, "sst_resvd"),
        (8, "sst_resample"),
    ]
    final_full, final_resumed = _snapshot(full.model), _snapshot(resumed.model)
    assert final_full.keys() == final_resumed.keys()
    for name in final_full:
        torch.testing.assert_close(final_resumed[name], final_full[name], rtol=1e-6, atol=1e-7)


def test_plain_pytorch_loop_with_the_stepper():
    model = sst_model(iteration_steps=3, iteration_warmup_steps=2, round_iterations=2)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    scheduler = get_constant_schedule(optimizer)
    sst = SSTStepper(model, optimizer, scheduler)
    data = token_dataset(n=28)
    events, lrs = [], []
    for start in range(0, 28, 4):
        batch = torch.stack([row["input_ids"] for row in data[start : start + 4]])
        model(input_ids=batch, labels=batch).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        events += [(sst.global_step, e["event"]) for e in sst.step()]
        lrs.append(optimizer.param_groups[0]["lr"] / 1e-2)
    assert events == [(3, "sst_resample"), (6, "sst_resvd"), (6, "sst_resample")]
    assert lrs == pytest.approx([1, 1, 0.5, 1, 1, 0.5, 1])


def test_stepper_refuses_an_optimizer_without_the_sst_parameters():
    model = sst_model()
    optimizer = torch.optim.AdamW(model.base_model.model.lm_head.parameters(), lr=1e-2)
    with pytest.raises(ValueError, match="does not hold"):
        SSTStepper(model, optimizer)
