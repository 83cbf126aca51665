"""Fira (Chen et al. 2024, arXiv 2410.01623) as ``fira=True`` on the GaLore optimizers: the update against the
paper's equations written out here, the norm-growth limiter, the stock Trainer (exact resume included) and the
settings it refuses."""

import math

import pytest
import torch
from galore_tiny import RandomTokens, galore_args, logged, tiny_llama
from transformers import Trainer

import hf_pept
from hf_pept.galore.fira import RESIDUAL_NORM_KEY

LR, BETAS, EPS, DECAY, ALPHA, RANK, GAP, GAMMA = 1e-2, (0.9, 0.999), 1e-8, 0.1, 0.25, 3, 2, 1.01


def _paper_fira_adamw(weight, grads, side):
    """Fira-Adam for one weight, from the paper's §4 equations; returns the weights and how often the limiter cut."""
    beta1, beta2 = BETAS
    weight = weight.double().clone()
    m = v = previous_norm = None
    limited = 0
    for t, grad in enumerate(grads, start=1):
        grad = grad.double()
        if (t - 1) % GAP == 0:
            u, _, vh = torch.linalg.svd(grad, full_matrices=False)
            basis = u[:, :RANK] if side == "left" else vh[:RANK].t()
        lowrank = basis.t() @ grad if side == "left" else grad @ basis  # R_t
        if m is None:
            m, v = torch.zeros_like(lowrank), torch.zeros_like(lowrank)
        m = beta1 * m + (1 - beta1) * lowrank
        v = beta2 * v + (1 - beta2) * lowrank**2
        n = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + EPS)  # ψ_t(R_t)
        if side == "left":
            outside = grad - basis @ lowrank
            phi = torch.linalg.vector_norm(n, dim=0) / (torch.linalg.vector_norm(lowrank, dim=0) + 1e-8)
            residual = outside * phi[None, :]
            back = basis @ n
        else:
            outside = grad - lowrank @ basis.t()
            phi = torch.linalg.vector_norm(n, dim=1) / (torch.linalg.vector_norm(lowrank, dim=1) + 1e-8)
            residual = outside * phi[:, None]
            back = n @ basis.t()
        norm = torch.linalg.vector_norm(residual)
        if previous_norm is not None and norm > GAMMA * previous_norm:
            residual = residual * (GAMMA * previous_norm / norm)
            limited += 1
        previous_norm = torch.linalg.vector_norm(residual)
        weight = (1 - LR * DECAY) * weight - LR * (ALPHA * back + residual)
    return weight, limited


@pytest.mark.parametrize("shape,side", [((8, 12), "left"), ((12, 8), "right")])
def test_fira_step_matches_the_papers_equations(shape, side):
    generator = torch.Generator().manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(shape, generator=generator))
    # Gradients whose direction changes from step to step: the residual's norm jumps, so the limiter must act.
    grads = [torch.randn(shape, generator=generator) * (1 + 3 * (t % 3 == 2)) for t in range(6)]
    expected, limited = _paper_fira_adamw(weight.detach(), grads, side)
    assert limited >= 1

    optimizer = hf_pept.GaLoreAdamW(
        [{"params": [weight], "rank": RANK, "update_proj_gap": GAP, "scale": ALPHA, "fira": True}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
        weight_decay=DECAY,
    )
    for grad in grads:
        weight.grad = grad.clone()
        optimizer.step()
    torch.testing.assert_close(weight.detach().double(), expected, rtol=1e-5, atol=1e-6)
    assert optimizer.state[weight][RESIDUAL_NORM_KEY].ndim == 0

    without_fira = torch.nn.Parameter(weight.detach().clone())
    plain = hf_pept.GaLoreAdamW([{"params": [without_fira], "rank": RANK, "update_proj_gap": GAP}], lr=LR)
    without_fira.grad = grads[0].clone()
    plain.step()
    assert RESIDUAL_NORM_KEY not in plain.state[without_fira]


def test_the_residual_is_the_complement_of_the_subspace():
    """Fira's residual G − P R has no component in the projected subspace: PᵀS = 0 (the paper's decomposition)."""
    from hf_pept.galore.fira import fira_residual

    generator = torch.Generator().manual_seed(1)
    grad = torch.randn(10, 16, generator=generator)
    basis = torch.linalg.svd(grad, full_matrices=False)[0][:, :RANK]
    lowrank = basis.t() @ grad
    residual = fira_residual(grad, lowrank, torch.ones_like(lowrank), basis, "left", {}, GAMMA)
    assert torch.linalg.matrix_norm(basis.t() @ residual) < 1e-5 * torch.linalg.matrix_norm(residual)
    # φ_j = ‖N_{:,j}‖ / ‖R_{:,j}‖ with N = 1: √r / ‖R_{:,j}‖ per column.
    phi = math.sqrt(RANK) / (lowrank.norm(dim=0) + 1e-8)
    torch.testing.assert_close(residual, (grad - basis @ lowrank) * phi)


@pytest.mark.usefixtures("one_cpu_thread")
@pytest.mark.parametrize("name", ["galore_adamw", "galore_adamw_8bit_layerwise"])
def test_stock_trainer_trains_with_fira_and_resumes_exactly(name, tmp_path):
    optim_args = "rank=8,update_proj_gap=5,scale=0.25,fira=true"
    layerwise = name.endswith("layerwise")
    args = galore_args(tmp_path, name, optim_args=optim_args, gradient_accumulation_steps=2 if layerwise else 1)
    trainer = Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens())
    trainer.train()
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    projected = [p for group in optimizer.param_groups if group.get("fira") for p in group["params"]]
    assert projected and all(RESIDUAL_NORM_KEY in optimizer.state[p] for p in projected)
    losses = logged(trainer)
    assert (losses[9] + losses[10]) / 2 < losses[1] - 0.1

    checkpoint = tmp_path / "checkpoint-5"
    resumed = Trainer(model=tiny_llama(seed=1), args=args, train_dataset=RandomTokens())
    resumed.train(resume_from_checkpoint=str(checkpoint))
    again = logged(resumed)
    for step in range(6, 11):
        assert again[step] == pytest.approx(losses[step], rel=1e-6, abs=0), step


@pytest.mark.parametrize(
    "name,optim_args,match",
    [
        ("galore_adamw", "rank=8,fira=maybe", "fira=maybe"),
        ("galore_adamw", "rank=8,fira=true,proj_type=full", "one-sided"),
        ("galore_adamw", "rank=8,fira=true,fira_limiter=0.5", "fira_limiter"),
        ("galore_adafactor", "rank=8,fira=true", "GaLoreAdafactor"),
    ],
)
def test_settings_fira_cannot_use_are_refused_before_training(tmp_path, name, optim_args, match):
    args = galore_args(tmp_path, name, optim_args=optim_args)
    with pytest.raises(ValueError, match=match):
        Trainer(model=tiny_llama(), args=args, train_dataset=RandomTokens()).create_optimizer()


@pytest.mark.usefixtures("one_cpu_thread")
def test_fira_ends_below_galore_at_the_same_rank_on_the_built_in_corpus(tmp_path):
    """Seeded pre-training of the ``tiny`` LLaMA (hidden 64) on the built-in corpus, rank 8, 400 steps at lr 1e-2.

    Measured before writing this test (eval loss): here GaLore 3.936, Fira 3.802 (full-rank AdamW at 3e-3: 3.930);
    at 1200 steps GaLore 3.731 / 3.752, Fira 3.483 / 3.493, full-rank 3.487 / 3.549 (seeds 0 / 1) — Fira recovers
    what the projection drops, as the paper reports. The bound asks for half the measured 400-step margin.
    """
    from pretraining_run import builtin_corpus, pretraining_args

    from hf_pept.models import build_llama

    steps = 400
    tokenizer, train, held_out = builtin_corpus(steps)
    eval_loss = {}
    for name, extra in (("galore", ""), ("fira", ",fira=true")):
        model = build_llama("tiny", vocab_size=len(tokenizer), max_position_embeddings=64, seed=0)
        args = pretraining_args(
            tmp_path / name,
            steps,
            learning_rate=1e-2,
            optim="galore_adamw",
            optim_target_modules=[r".*self_attn.*", r".*mlp.*"],
            optim_args=f"rank=8,update_proj_gap=200,scale=0.25{extra}",
        )
        trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=held_out)
        trainer.train()
        eval_loss[name] = trainer.evaluate()["eval_loss"]
    print(f"eval loss after {steps} steps: GaLore {eval_loss['galore']:.4f}, Fira {eval_loss['fira']:.4f}")
    assert eval_loss["fira"] < eval_loss["galore"] - 0.065, eval_loss
