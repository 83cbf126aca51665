"""``import hf_pept`` + the stock Trainer with ``optim="galore_*"``: training, exact resume, hyperparameters,
layer-wise gradient accumulation and logging, and the errors for what cannot work."""

import sys
import warnings

import pytest
import torch
from galore_tiny import RandomTokens, galore_args, logged, tiny_llama
from transformers import Trainer, TrainingArguments

import hf_pept
from hf_pept.galore.integration import (
    GALORE_OPTIMIZERS,
    LayerwiseGradNormCallback,
    galore_optimizer_handler,
    register_galore,
)

NAMES = list(GALORE_OPTIMIZERS)
EXPECTED_CLASS = {
    "galore_adamw": hf_pept.GaLoreAdamW,
    "galore_adamw_8bit": hf_pept.GaLoreAdamW8bit,
    "galore_adafactor": hf_pept.GaLoreAdafactor,
}


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def _inner(optimizer):
    return getattr(optimizer, "optimizer", optimizer)


def test_registration_surface_of_transformers():
    """Fails loudly when a transformers release moves the two objects we register in."""
    from transformers import trainer as trainer_module
    from transformers.trainer_optimizer import _OPTIMIZER_HANDLERS
    from transformers.training_args import OptimizerNames

    for name in NAMES:
        assert _OPTIMIZER_HANDLERS[OptimizerNames(name)] is galore_optimizer_handler
    assert trainer_module._OPTIMIZER_HANDLERS is _OPTIMIZER_HANDLERS
    assert trainer_module.DEFAULT_CALLBACKS.count(LayerwiseGradNormCallback) == 1
    register_galore()  # idempotent
    assert trainer_module.DEFAULT_CALLBACKS.count(LayerwiseGradNormCallback) == 1


def test_missing_surface_is_a_clear_error(monkeypatch):
    import transformers.trainer_optimizer as trainer_optimizer

    monkeypatch.delattr(trainer_optimizer, "_OPTIMIZER_HANDLERS")
    with pytest.raises(ImportError, match=r"transformers>=5\.2,<6"):
        register_galore()


def test_trainer_builds_our_optimizer_without_galore_torch(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "galore_torch", None)  # any `import galore_torch` now raises ImportError
    args = galore_args(tmp_path, "galore_adamw")
    optimizer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()
    assert type(optimizer) is hf_pept.GaLoreAdamW


@pytest.mark.parametrize("name", NAMES)
def test_every_name_trains_and_resumes_exactly(name, tmp_path):
    layerwise = name.endswith("layerwise")
    # layer-wise runs use gradient accumulation, which they must support
    args = galore_args(tmp_path, name, gradient_accumulation_steps=2 if layerwise else 1)
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
    trainer.train()
    optimizer = _inner(trainer.optimizer)
    assert isinstance(optimizer, EXPECTED_CLASS[name.removesuffix("_layerwise")])
    assert optimizer.layerwise == layerwise
    losses = logged(trainer)
    assert sorted(losses) == list(range(1, 11))
    assert (losses[9] + losses[10]) / 2 < losses[1] - 0.1
    assert [e["step"] for e in optimizer.pop_events()] == [0, 5]

    checkpoint = tmp_path / "checkpoint-5"
    state = torch.load(checkpoint / "optimizer.pt", weights_only=True)
    assert any("projector" in s for s in state["state"].values())

    resumed = Trainer(model=tiny_llama(seed=1), args=args, train_dataset=RandomTokens())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    again = logged(resumed)
    for step in range(6, 11):  # step 6 refreshes the projector right after the save
        assert again[step] == pytest.approx(losses[step], rel=1e-6, abs=0), step


@pytest.mark.parametrize("name", ["galore_adamw", "galore_adafactor_layerwise"])
def test_weight_decay_is_decoupled_on_the_full_weight(name, tmp_path):
    """After one step, W(λ) − W(0) = −ηλ·W₀ on decayed weights (projected or not) and 0 on norms."""
    lr, decay = 1e-2, 0.1
    after = {}
    for wd in (0.0, decay):
        args = galore_args(
            tmp_path / str(wd), name, max_steps=1, weight_decay=wd, lr_scheduler_type="constant", learning_rate=lr
        )
        trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
        trainer.train()
        after[wd] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    initial = dict(tiny_llama().named_parameters())
    for n, w0 in initial.items():
        expected = torch.zeros_like(w0) if "norm" in n else -lr * decay * w0.detach()
        torch.testing.assert_close(after[decay][n] - after[0.0][n], expected, rtol=1e-4, atol=1e-7, msg=n)


@pytest.mark.parametrize("name", ["galore_adamw", "galore_adamw_8bit"])
def test_max_grad_norm_clips_the_gradient_our_step_reads(name, tmp_path):
    """Clipping the gradient to a norm far below Adam's ε leaves almost no step, projected weights included;
    unclipped, every weight moves by about the learning rate. (Adafactor is scale-invariant, so clipping cannot show
    in its step; the layer-wise variants refuse clipping, tested below.)"""
    moved = {}
    for max_norm in (0.0, 1e-9):
        args = galore_args(tmp_path / str(max_norm), name, max_steps=1, weight_decay=0.0, max_grad_norm=max_norm)
        trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
        trainer.train()
        initial = dict(tiny_llama().named_parameters())
        moved[max_norm] = {
            n: (p.detach() - initial[n].detach()).abs().max().item() for n, p in trainer.model.named_parameters()
        }
    for n in ("model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight", "lm_head.weight"):
        assert moved[0.0][n] > 1e-4, (n, moved[0.0][n])
        assert moved[1e-9][n] < 0.05 * moved[0.0][n], (n, moved[1e-9][n], moved[0.0][n])


def test_adam_hyperparameters_reach_the_optimizer(tmp_path):
    args = galore_args(tmp_path, "galore_adamw", adam_beta1=0.8, adam_beta2=0.95, adam_epsilon=1e-6, weight_decay=0.05)
    optimizer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()
    groups = optimizer.param_groups
    assert all(g["betas"] == (0.8, 0.95) and g["eps"] == 1e-6 and g["lr"] == 1e-2 for g in groups)
    projected = [g for g in groups if g.get("rank") is not None]
    assert len(projected) == 1 and projected[0]["rank"] == 8 and projected[0]["update_proj_gap"] == 5
    assert projected[0]["scale"] == 0.25 and projected[0]["weight_decay"] == 0.05
    # 2 layers × (q, k, v, o, gate, up, down)
    assert len(projected[0]["params"]) == 14
    no_decay = [g for g in groups if g["weight_decay"] == 0.0]
    assert no_decay and all(p.dim() == 1 for g in no_decay for p in g["params"])


def test_layerwise_with_accumulation_equals_the_full_step_and_logs_the_real_grad_norm(tmp_path):
    runs = {}
    for name in ("galore_adamw", "galore_adamw_layerwise"):
        args = galore_args(tmp_path / name, name, max_steps=6, gradient_accumulation_steps=3, max_grad_norm=0.0)
        trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
        trainer.train()
        runs[name] = trainer
    full, layerwise = runs["galore_adamw"], runs["galore_adamw_layerwise"]
    for step, loss in logged(full).items():
        assert logged(layerwise)[step] == pytest.approx(loss, rel=1e-6)
    full_norms, layerwise_norms = logged(full, "grad_norm"), logged(layerwise, "grad_norm")
    assert len(full_norms) == 6 and all(v > 0 for v in full_norms.values())
    for step, norm in full_norms.items():
        assert layerwise_norms[step] == pytest.approx(norm, rel=1e-5)


def test_layerwise_with_the_default_max_grad_norm_trains_unclipped_with_one_warning(tmp_path):
    """transformers' documented layer-wise example keeps TrainingArguments' max_grad_norm=1.0: it must train."""
    args = TrainingArguments(
        str(tmp_path),
        optim="galore_adamw_layerwise",
        optim_target_modules=[r".*attn.*", r".*mlp.*"],
        optim_args="rank=8",  # the tiny model is 32 wide
        max_steps=4,
        logging_steps=1,
        learning_rate=1e-2,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    assert args.max_grad_norm == 1.0
    # one batch of 8 sequences, seen at every step: its loss must fall
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens(num_samples=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    clipping = [w for w in caught if "cannot clip" in str(w.message)]
    assert len(clipping) == 1 and "max_grad_norm=1.0" in str(clipping[0].message)
    losses, norms = logged(trainer), logged(trainer, "grad_norm")
    assert sorted(losses) == [1, 2, 3, 4] and losses[4] < losses[1] - 0.05
    assert sorted(norms) == [1, 2, 3, 4] and all(norm > 0 for norm in norms.values())
    # unclipped: the logged norm is the one the hooks measured (the Trainer's own clip saw freed gradients only)
    assert norms[4] == pytest.approx(_inner(trainer.optimizer).last_grad_norm)


def test_a_rank_that_projects_nothing_fails_before_training_with_a_rank_that_works(tmp_path):
    args = galore_args(tmp_path, "galore_adamw", optim_args="rank=128")
    with pytest.raises(ValueError, match=r"project no weight at rank=128.*e\.g\. rank=16"):
        Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()


@pytest.mark.parametrize(
    "optim_args,match",
    [("rank=8,ranq=2", "ranq"), ("rank=8,proj_type=middle", "proj_type"), ("proj_method=lanczos", "proj_method")],
)
def test_bad_optim_args_name_the_knob(tmp_path, optim_args, match):
    args = galore_args(tmp_path, "galore_adamw", optim_args=optim_args)
    with pytest.raises(ValueError, match=match):
        Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()


def test_missing_target_modules_is_a_clear_error(tmp_path):
    args = galore_args(tmp_path, "galore_adamw", optim_target_modules=None)
    with pytest.raises(ValueError, match="optim_target_modules"):
        Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()
