"""``hf-pept train --method sst`` end to end: a run folder with SST's events, and the optimizer state it measured
equal to the memory estimate (state for Σ and the active vectors only)."""

import json

import pytest

from hf_pept import memory
from hf_pept.cli import main


def test_hf_pept_train_method_sst_runs_and_records_its_events(cache_dir, tmp_path, capsys):
    small = ["--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_steps", "6", "--eval_steps", "0"]
    small += ["--save_steps", "0", "--max_train_tokens", "2048", "--max_eval_tokens", "256", "--logging_steps", "1"]
    sst = ["--iteration_steps", "2", "--iteration_warmup_steps", "1", "--round_iterations", "2"]
    run_dir = tmp_path / "sst"
    assert main(["train", "--method", "sst", "--model", "tiny", *small, *sst, "--output_dir", str(run_dir)]) == 0
    assert "sst, rank 16 on a tiny model" in capsys.readouterr().out
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    events = [(r["step"], r["event"]) for r in records if "event" in r]
    assert events == [(2, "sst_resample"), (4, "sst_resvd"), (4, "sst_resample"), (6, "sst_resample")]
    config = json.loads((run_dir / "config.json").read_text())
    assert config["option_groups"]["SSTArguments"]["iteration_steps"] == 2
    summary = json.loads((run_dir / "summary.json").read_text())
    vocab = config["resolved"]["vocab_size"]
    expected = memory.estimate("sst", model="tiny", vocab_size=vocab, seq_len=32, batch_size=2)
    # The run ended right after a resample: the restarted state keeps its tensors, so the bytes are all there.
    assert summary["optimizer_state_mb"] * memory.MB == pytest.approx(expected.optimizer_state, rel=1e-6)
    assert summary["trained_params"] == expected.trained_params
