"""hf-pept compare: the budget's commands, the table's arithmetic, and one whole tiny comparison."""

import csv
import json
import math
import os
import sys

import pytest

from hf_pept import compare, run_args


def test_every_method_command_parses_with_the_budget_scaled():
    budget = compare.Budget(scale=2.0)
    assert budget.max_steps == 2 * compare.BASE_STEPS
    for method in compare.DEFAULT_METHODS:
        argv = budget.argv(method, "out", "cpu")
        assert argv[0] == "train"
        prepared = run_args.prepare(*run_args.parse_train_args(argv[1:]))
        # every low-rank method at the papers' ratio: a quarter of the 20m model's hidden size 256
        expected_rank = None if method == "full" else 64
        assert (prepared.run.method, prepared.run.max_steps, prepared.rank, prepared.run.seed) == (
            method,
            400,
            expected_rank,
            42,
        )
    relora = run_args.groups_of(*run_args.parse_train_args(budget.argv("relora", "out", "cpu")[1:]))
    assert relora[run_args.ReLoRAArguments].warm_start_steps == relora[run_args.ReLoRAArguments].relora_steps == 100
    galore = run_args.groups_of(*run_args.parse_train_args(budget.argv("galore", "out", "cpu")[1:]))
    assert galore[run_args.GaLoreArguments].update_proj_gap == 100  # a quarter of the run


def test_compare_runs_the_methods_the_table_marks():
    from hf_pept import methods

    assert compare.DEFAULT_METHODS == tuple(m.name for m in methods.METHODS.values() if m.in_compare)
    assert compare.DEFAULT_METHODS[0] == "full" and {"lora", "relora", "galore"} <= set(compare.DEFAULT_METHODS)


def test_gap_to_full_rank_is_the_relative_perplexity_difference():
    summaries = {
        "full": {"trained_params": 2_000_000, "eval_perplexity": 40.0},
        "galore": {"trained_params": 2_000_000, "eval_perplexity": 41.0},
        "lora": {"trained_params": 500_000, "eval_perplexity": 50.0},
    }
    rows = {row["method"]: row for row in compare.table_rows(summaries)}
    assert rows["full"]["gap_to_full_pct"] == 0.0
    assert rows["galore"]["gap_to_full_pct"] == pytest.approx(2.5)
    assert rows["lora"]["gap_to_full_pct"] == pytest.approx(25.0)
    assert rows["lora"]["trained_params"] == pytest.approx(0.5)
    table = compare.format_table(list(rows.values()))
    assert "+25.0" in table and "eval perplexity" in table


def test_bad_methods_are_refused():
    with pytest.raises(ValueError, match="dora"):
        compare.main(["--methods", "full,dora"])
    with pytest.raises(ValueError, match="budget"):
        compare.Budget(scale=0)


def test_a_whole_tiny_comparison(tmp_path, monkeypatch):
    """The four methods run in-process (the CLI's main instead of a subprocess) on a 6-step budget."""
    from hf_pept.cli import main

    monkeypatch.setenv("HF_PEPT_CACHE", str(tmp_path / "cache"))

    monkeypatch.setattr(compare, "run_train", main)
    out = tmp_path / "compare"
    argv = ["--budget", "0.03", "--model", "tiny", "--vocab_size", "300", "--seq_len", "32", "--rank", "8"]
    argv += ["--max_train_tokens", "4096"]
    assert compare.main([*argv, "--max_eval_tokens", "256", "--device", "cpu", "--output_dir", str(out)]) == 0
    with open(out / compare.CSV_FILE, newline="") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle)}
    assert list(rows) == list(compare.DEFAULT_METHODS)
    for method, row in rows.items():
        summary = json.loads((out / method / "summary.json").read_text())
        assert float(row["eval_perplexity"]) == pytest.approx(summary["eval_perplexity"])
        assert summary["steps"] == 6
    full = float(rows["full"]["eval_perplexity"])
    assert float(rows["galore"]["gap_to_full_pct"]) == pytest.approx(
        100 * (float(rows["galore"]["eval_perplexity"]) - full) / full
    )
    merges = [json.loads(line) for line in (out / "relora" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "relora_merge" for r in merges)
    assert (out / compare.PLOT_FILE).stat().st_size > 0
    assert math.isfinite(full)


def test_missing_matplotlib_skips_the_plot(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert compare.plot({}, [], tmp_path / "x.png", "t") is False
    assert not os.path.exists(tmp_path / "x.png")
