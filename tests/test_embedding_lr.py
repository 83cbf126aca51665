"""--embedding_learning_rate: the embeddings and head at a rate of their own, the rest of the model at the run's."""

import json

import pytest
import torch
from transformers import Trainer

from hf_pept import run_args
from hf_pept.embedding_lr import EmbeddingLearningRateTrainer
from hf_pept.models import build_model
from tests.pretraining_run import builtin_corpus, pretraining_args


def _trainer(cls, tmp_path, steps, **extra):
    tokenizer, train, _ = builtin_corpus(steps)
    model = build_model("tiny", len(tokenizer), seed=0)
    args = pretraining_args(tmp_path, steps, 1e-3, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0)
    return cls(model=model, args=args, train_dataset=train, **extra)


def test_the_first_adam_step_moves_each_group_by_its_own_rate(cache_dir, tmp_path):
    """Adam's first update is lr·g/(|g| + ε) ≈ ±lr per element: the largest change of each tensor is its rate."""
    trainer = _trainer(EmbeddingLearningRateTrainer, tmp_path, 1, embedding_learning_rate=2e-2)
    model = trainer.model
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer.train()
    change = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
    assert change["model.embed_tokens.weight"] == pytest.approx(2e-2, rel=1e-3)
    assert change["lm_head.weight"] == pytest.approx(2e-2, rel=1e-3)
    assert change["model.layers.0.self_attn.q_proj.weight"] == pytest.approx(1e-3, rel=1e-3)
    assert change["model.layers.1.mlp.down_proj.weight"] == pytest.approx(1e-3, rel=1e-3)


def test_the_same_rate_for_the_embeddings_trains_exactly_as_the_stock_trainer(cache_dir, tmp_path):
    losses = []
    for cls, extra in ((Trainer, {}), (EmbeddingLearningRateTrainer, {"embedding_learning_rate": 1e-3})):
        trainer = _trainer(cls, tmp_path / cls.__name__, 8, **extra)
        trainer.args.logging_steps = 1
        trainer.train()
        losses.append([r["loss"] for r in trainer.state.log_history if "loss" in r])
    assert len(losses[0]) == 8 and losses[0] == losses[1]


def test_the_galore_family_refuses_it_in_one_line_naming_the_methods_that_take_it():
    with pytest.raises(ValueError, match="not available with --method galore.*methods that take it: full, lora"):
        run_args.RunArguments(method="galore", embedding_learning_rate=1e-2)
    with pytest.raises(ValueError, match="embedding_learning_rate must be > 0"):
        run_args.RunArguments(method="full", embedding_learning_rate=0.0)


def test_a_run_records_the_embedding_rate(cache_dir, tmp_path):
    from hf_pept.cli import main

    argv = ["train", "--method", "full", "--model", "tiny", "--vocab_size", "512", "--seq_len", "32"]
    argv += ["--batch_size", "4", "--max_steps", "2", "--eval_steps", "0", "--save_steps", "0"]
    argv += ["--max_train_tokens", "2048", "--max_eval_tokens", "256", "--embedding_learning_rate", "3e-2"]
    assert main([*argv, "--output_dir", str(tmp_path / "run")]) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["embedding_learning_rate"] == 3e-2 and summary["learning_rate"] == 1e-3
    assert torch.isfinite(torch.tensor(summary["eval_loss"]))
