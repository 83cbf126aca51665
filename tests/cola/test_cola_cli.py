"""``hf-pept train --method cola`` / ``cola-m``: the run builds a CoLA model from the method table, trains it and
records what the memory estimate predicts; bad options are refused before any work."""

import json

import pytest

from hf_pept import memory, run_args
from hf_pept.cli import main

SMALL_RUN = [
    "--model", "tiny", "--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_steps", "2",
    "--eval_steps", "0", "--save_steps", "0", "--max_train_tokens", "2048", "--max_eval_tokens", "256",
]  # fmt: skip


@pytest.mark.parametrize("method", ["cola", "cola-m"])
def test_hf_pept_train_builds_and_trains_a_cola_model(cache_dir, tmp_path, capsys, method):
    run_dir = tmp_path / method
    assert main(["train", "--method", method, *SMALL_RUN, "--output_dir", str(run_dir)]) == 0
    assert f"{method}, rank 16 on a tiny model" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    model_config = config["resolved"]["model_config"]
    assert model_config["model_type"] == "cola" and model_config["rank"] == 16
    assert (
        model_config["cola_m"] == (method == "cola-m") and model_config["only_lr_act"] is False
    )  # tiny: paper's small
    assert config["resolved"]["learning_rate"] == 6e-3
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = config["resolved"]["vocab_size"]
    estimate = memory.estimate(method, model="tiny", vocab_size=vocab, seq_len=32, batch_size=2)
    assert summary["total_params"] == estimate.total_params
    assert summary["optimizer_state_mb"] * memory.MB == pytest.approx(estimate.optimizer_state, rel=1e-3)
    assert summary["eval_perplexity"] > 1


def test_hf_pept_train_refuses_what_cola_cannot_do():
    prepare = run_args.prepare
    with pytest.raises(ValueError, match="drop --gradient_checkpointing"):
        prepare(run_args.RunArguments(method="cola-m", model="tiny", gradient_checkpointing=True))
    with pytest.raises(ValueError, match="target_modules does not apply"):
        prepare(run_args.RunArguments(method="cola", model="tiny"), run_args.LowRankArguments(target_modules=["q"]))
    with pytest.raises(ValueError, match="rank must be < 64"):
        prepare(run_args.RunArguments(method="cola", model="tiny"), run_args.LowRankArguments(rank=64))
    with pytest.raises(ValueError, match="only_lr_act must be one of"):
        run_args.CoLAArguments(only_lr_act="maybe")
    prepared = prepare(run_args.RunArguments(method="cola", model="350m"), run_args.CoLAArguments())
    assert prepared.config.only_lr_act is True and prepared.config.rank == 256
    assert prepared.run.peak_learning_rate == 3e-3
