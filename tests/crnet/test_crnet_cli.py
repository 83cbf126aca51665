"""``hf-pept train --method crnet``: the run builds a CR-Net model from the method table, trains it and records
what the memory estimate predicts; bad options are refused before any work."""

import json

import pytest

from hf_pept import memory, run_args
from hf_pept.cli import main

SMALL_RUN = [
    "--model", "tiny", "--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_steps", "2",
    "--eval_steps", "0", "--save_steps", "0", "--max_train_tokens", "2048", "--max_eval_tokens", "256",
]  # fmt: skip


def test_hf_pept_train_builds_and_trains_a_crnet_model_with_recompute(cache_dir, tmp_path, capsys):
    run_dir = tmp_path / "crnet"
    argv = ["train", "--method", "crnet", "--recompute", "true", "--checkpoint_every", "2", *SMALL_RUN]
    assert main([*argv, "--output_dir", str(run_dir)]) == 0
    assert "crnet, rank 16 on a tiny model" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    model_config = config["resolved"]["model_config"]
    assert model_config["model_type"] == "crnet" and model_config["rank"] == 16
    assert model_config["recompute"] is True and model_config["checkpoint_every"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = config["resolved"]["vocab_size"]
    estimate = memory.estimate("crnet", model="tiny", vocab_size=vocab, seq_len=32, batch_size=2, recompute=True)
    assert summary["total_params"] == estimate.total_params
    assert summary["optimizer_state_mb"] * memory.MB == pytest.approx(estimate.optimizer_state, rel=1e-3)
    assert summary["eval_perplexity"] > 1


def test_hf_pept_train_refuses_what_crnet_cannot_do():
    prepare = run_args.prepare
    with pytest.raises(ValueError, match="use --recompute true"):
        prepare(run_args.RunArguments(method="crnet", model="tiny", gradient_checkpointing=True))
    with pytest.raises(ValueError, match="target_modules does not apply"):
        prepare(run_args.RunArguments(method="crnet", model="tiny"), run_args.LowRankArguments(target_modules=["q"]))
    with pytest.raises(ValueError, match="rank must be < 64"):
        prepare(run_args.RunArguments(method="crnet", model="tiny"), run_args.LowRankArguments(rank=64))
    with pytest.raises(ValueError, match="checkpoint_every"):
        run_args.CRNetArguments(checkpoint_every=0)
    prepared = prepare(run_args.RunArguments(method="crnet", model="1b"), run_args.LowRankArguments(rank=448))
    assert prepared.config.rank == 448 and not prepared.config.recompute
