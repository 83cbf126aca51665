"""hf-pept compare: the budget's commands, the table's arithmetic, and one whole tiny comparison."""

import csv
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch

from hf_pept import compare, compare_table, run_args


def test_every_method_command_parses_with_the_budget_scaled():
    budget = compare.Budget(scale=2.0)
    assert budget.max_steps == 2 * compare.BASE_STEPS
    for method in compare.DEFAULT_METHODS:
        argv = budget.argv(method, "out", "cpu", seed=7, lr=3e-3)
        assert argv[0] == "train"
        prepared = run_args.prepare(*run_args.parse_train_args(argv[1:]))
        # every low-rank method at the papers' ratio: a quarter of the tiny model's hidden size 64
        expected_rank = None if method == "full" else 16
        run = prepared.run
        assert (run.method, run.max_steps, prepared.rank, run.seed, run.learning_rate) == (
            method,
            2 * compare.BASE_STEPS,
            expected_rank,
            7,
            3e-3,
        )
    quarter = 2 * compare.BASE_STEPS // 4
    relora = run_args.groups_of(*run_args.parse_train_args(budget.argv("relora", "out", "cpu")[1:]))
    assert (
        relora[run_args.ReLoRAArguments].warm_start_steps == relora[run_args.ReLoRAArguments].relora_steps == quarter
    )
    galore = run_args.groups_of(*run_args.parse_train_args(budget.argv("galore", "out", "cpu")[1:]))
    assert galore[run_args.GaLoreArguments].update_proj_gap == quarter


def test_compare_runs_the_methods_the_table_marks():
    from hf_pept import methods

    assert compare.DEFAULT_METHODS == tuple(m.name for m in methods.METHODS.values() if m.in_compare)
    assert compare.DEFAULT_METHODS[0] == "full" and {"lora", "relora", "galore"} <= set(compare.DEFAULT_METHODS)


def _summary(ppl, seed, trained=2_000_000, rank=None):
    return {"eval_perplexity": ppl, "seed": seed, "trained_params": trained, "rank": rank, "optimizer_state_mb": 1.0}


def test_rows_average_the_seeds_and_gap_to_full_rank_is_the_relative_perplexity_difference():
    rows = compare_table.add_gaps(
        [
            compare_table.method_row("full", [_summary(40.0, 1), _summary(42.0, 2)], 3e-3, "sweep"),
            compare_table.method_row(
                "galore", [_summary(41.0, 1, rank=32), _summary(43.0, 2, rank=32)], 1e-2, "sweep"
            ),
            compare_table.method_row("lora", [_summary(50.0, 1, trained=500_000, rank=32)], 1e-2, "method default"),
        ]
    )
    by_method = {row["method"]: row for row in rows}
    assert by_method["full"]["eval_perplexity"] == 41.0 and by_method["full"]["gap_to_full_pct"] == "—"
    assert by_method["full"]["eval_perplexity_sd"] == pytest.approx(2**0.5)  # sample sd of 40 and 42
    assert by_method["galore"]["gap_to_full_pct"] == pytest.approx(100 * (42.0 - 41.0) / 41.0)
    assert by_method["lora"]["eval_perplexity_sd"] is None and by_method["lora"]["trained_params"] == 0.5
    table = compare_table.format_table(rows)
    assert "—" in table and "+22.0" in table and "1e-02" in table
    lines = compare_table.notes(rows, "cpu_rss", "model: x")
    assert any("not swept, the method's default: lora" in line for line in lines)
    untuned = [dict(row, learning_rate_source="method default") for row in rows]
    assert any("no sweep is committed" in line for line in compare_table.notes(untuned, "cpu_rss", "model: x"))
    assert any("peak RSS on CPU" in line for line in lines)


def test_the_committed_sweep_applies_only_to_its_own_budget(tmp_path, monkeypatch):
    budget = compare.Budget()
    saved = tmp_path / "defaults.json"
    saved.write_text(json.dumps({"budget": budget.key(), "learning_rates": {"full": 3e-3, "galore": 3e-2}}))
    monkeypatch.setattr(compare, "DEFAULTS_FILE", saved)
    plan = compare.learning_rate_plan(["full", "galore", "lora"], budget, {"lora": 2e-3})
    assert plan == {"full": (3e-3, "sweep"), "galore": (3e-2, "sweep"), "lora": (2e-3, "given")}
    other = compare.Budget(scale=2.0)
    assert compare.learning_rate_plan(["full"], other, {})["full"] == (1e-3, "method default")
    with pytest.raises(ValueError, match="method=rate"):
        compare._parse_rates("dora=1e-3")


def test_bad_methods_are_refused():
    with pytest.raises(ValueError, match="dora"):
        compare.main(["--methods", "full,dora"])
    with pytest.raises(ValueError, match="budget"):
        compare.Budget(scale=0)
    with pytest.raises(ValueError, match="seeds"):
        compare.Budget(seeds=0)


TINY = ["--budget", "0.015", "--model", "tiny", "--vocab_size", "300", "--seq_len", "32", "--rank", "8"]
TINY += ["--max_train_tokens", "4096", "--max_eval_tokens", "256", "--device", "cpu"]
TINY_BUDGET = compare.Budget(0.015, "tiny", 300, 32, 8, 8, max_eval_tokens=256, max_train_tokens=4096)


def _compare_in_process(tmp_path, monkeypatch, *argv):
    """``hf-pept compare`` with the CLI's main instead of a subprocess per run; the CSV's rows by label."""
    from hf_pept.cli import main

    monkeypatch.setenv("HF_PEPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compare, "run_train", main)
    out = tmp_path / "compare"
    assert compare.main([*TINY, *argv, "--output_dir", str(out)]) == 0
    with open(out / compare.CSV_FILE, newline="") as handle:
        return out, {row["method"]: row for row in csv.DictReader(handle)}


def test_a_whole_tiny_comparison_runs_every_method_and_the_memory_aligned_point(tmp_path, monkeypatch):
    """Every entry of the default comparison on a 6-step budget."""
    out, rows = _compare_in_process(tmp_path, monkeypatch)
    entries = compare.default_entries(TINY_BUDGET)
    assert list(rows) == [e.label for e in entries]
    assert {e.method for e in entries} == set(compare.DEFAULT_METHODS)
    aligned = [e for e in entries if e.rank is not None]
    assert [e.method for e in aligned] == ["galore"] and aligned[0].rank > 8  # LoRA's state holds a higher rank
    assert entries.index(aligned[0]) == entries.index(compare.Entry("galore")) + 1
    for entry in entries:
        row = rows[entry.label]
        summary = json.loads((out / entry.folder / "summary.json").read_text())
        assert summary["rank"] == (entry.rank or (None if entry.method == "full" else 8))
        assert (summary["seed"], summary["steps"], row["seeds"]) == (42, 6, "42")
        assert float(row["lr"]) == summary["learning_rate"]
        assert float(row["eval_perplexity"]) == pytest.approx(summary["eval_perplexity"])
    full = float(rows["full"]["eval_perplexity"])
    assert rows["full"]["gap_to_full_pct"] == "—" and math.isfinite(full)
    assert float(rows["galore"]["gap_to_full_pct"]) == pytest.approx(
        100 * (float(rows["galore"]["eval_perplexity"]) - full) / full
    )
    merges = [json.loads(line) for line in (out / "relora" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "relora_merge" for r in merges)
    assert (out / compare.PLOT_FILE).stat().st_size > 0
    text = (out / "comparison.txt").read_text()
    assert "a unigram model (token frequencies only) scores" in text and "the memory-aligned point" in text


def test_two_seeds_are_averaged_with_their_spread(tmp_path, monkeypatch):
    out, rows = _compare_in_process(tmp_path, monkeypatch, "--methods", "full,galore:rank=12", "--seeds", "2")
    assert list(rows) == ["full", "galore:rank=12"]
    for folder, label in (("full", "full"), ("galore-rank12", "galore:rank=12")):
        first = json.loads((out / folder / "summary.json").read_text())
        second = json.loads((out / f"{folder}-seed43" / "summary.json").read_text())
        assert (first["seed"], second["seed"], rows[label]["seeds"]) == (42, 43, "42,43")
        ppl = [first["eval_perplexity"], second["eval_perplexity"]]
        assert float(rows[label]["eval_perplexity"]) == pytest.approx(sum(ppl) / 2)
        assert float(rows[label]["eval_perplexity_sd"]) == pytest.approx(abs(ppl[0] - ppl[1]) / math.sqrt(2))
    assert "seeds [42, 43]" in (out / "comparison.txt").read_text()
    assert "rank 12 given with --methods" in (out / "comparison.txt").read_text()


def test_a_sweep_writes_every_rate_and_the_best_per_method(tmp_path, monkeypatch):
    from hf_pept.cli import main

    monkeypatch.setenv("HF_PEPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(compare, "run_train", main)
    monkeypatch.setattr(compare, "SWEEP_GRID", (1e-3, 3e-2))
    out = tmp_path / "sweep"
    budget = TINY_BUDGET
    best = compare.sweep(budget, ["full", "galore"], out, "cpu", grid=(1e-3, 3e-2))
    with open(out / compare.SWEEP_FILE, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    for method in ("full", "galore"):
        by_lr = {float(r["lr"]): float(r["eval_perplexity"]) for r in rows if r["method"] == method}
        assert best[method] == min(by_lr, key=by_lr.get)
    saved = json.loads((out / compare.SWEEP_DEFAULTS).read_text())
    assert saved["learning_rates"] == best and saved["budget"] == budget.key()


def test_missing_matplotlib_skips_the_plot(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert compare.plot({}, [], tmp_path / "x.png", "t") is False
    assert not os.path.exists(tmp_path / "x.png")


def test_the_committed_sweep_matches_the_default_budget_and_names_every_compared_method():
    saved = json.loads(compare.DEFAULTS_FILE.read_text())
    assert saved["budget"] == compare.Budget().key() and saved["command"].startswith("hf-pept compare --sweep")
    assert set(saved["learning_rates"]) == set(compare.DEFAULT_METHODS)
    assert all(lr in saved["grid"] for lr in saved["learning_rates"].values())
    plan = compare.learning_rate_plan(list(compare.DEFAULT_METHODS), compare.Budget(), {})
    assert {source for _, source in plan.values()} == {"sweep"}


def test_the_memory_aligned_rank_is_the_largest_whose_state_fits_in_loras():
    """GaLore's Adam state on an m×n weight (m ≤ n) at rank r: moments 2·r·n and projector m·r; LoRA's at rank
    r₀: moments 2·r₀·(m + n) (plus the embeddings and head, full Adam under both). Written out for the tiny model."""
    budget = compare.Budget()
    hidden, inter, layers, r0 = 64, 176, 2, 16
    shapes = [(hidden, hidden)] * 4 + [(inter, hidden)] * 2 + [(hidden, inter)]  # q k v o, gate up, down

    def galore(r):
        return sum(2 * r * max(m, n) + min(m, n) * r for m, n in shapes) * layers

    lora = sum(2 * r0 * (m + n) for m, n in shapes) * layers
    expected = max(r for r in range(1, hidden + 1) if galore(r) <= lora)
    assert compare.state_matched_rank(budget) == expected
    assert compare.Entry("galore", expected) in compare.default_entries(budget)


def test_entries_parse_own_ranks_and_refuse_bad_ones_naming_the_value():
    entries = compare.parse_entries("galore:rank=24,lora,full", compare.Budget())
    assert [e.label for e in entries] == ["full", "lora", "galore:rank=24"]
    argv = compare.Budget().argv("galore", "out", "cpu", rank=24)
    assert argv[argv.index("--rank") + 1] == "24" and argv.count("--rank") == 1
    for bad, match in (
        ("galore:rnk=2", "rnk"),
        ("full:rank=3", "full:rank=3"),
        ("dora", "'dora'"),
        ("galore:rank=²", "²"),
    ):
        with pytest.raises(ValueError, match=match):
            compare.parse_entries(bad, compare.Budget())


def test_the_unigram_reference_is_the_frequency_model_written_out():
    train = [{"input_ids": torch.tensor([0, 1, 1, 2])}, {"input_ids": torch.tensor([1, 1])}]
    held_out = [{"input_ids": torch.tensor([3, 1, 0])}]
    counts = [1 + 1, 1 + 4, 1 + 1, 1 + 0]  # add-one over a vocabulary of 4
    p = [c / sum(counts) for c in counts]
    expected = math.exp(-(math.log(p[1]) + math.log(p[0])) / 2)  # the first token of a block is not scored
    assert compare.unigram_perplexity(train, held_out, 4) == pytest.approx(expected)


def test_jobs_run_at_once_each_on_a_share_of_the_cores(tmp_path, monkeypatch):
    calls = []

    def fake_run_train(argv, threads=None):
        run_dir = Path(argv[argv.index("--output_dir") + 1])
        calls.append((argv[argv.index("--seed") + 1], threads))
        run_dir.mkdir(parents=True)
        (run_dir / "summary.json").write_text(json.dumps({"eval_perplexity": 1.0}))
        (run_dir / "metrics.jsonl").write_text("")
        return 0

    monkeypatch.setattr(compare, "run_train", fake_run_train)
    monkeypatch.setattr(compare.os, "cpu_count", lambda: 4)
    tasks = [compare.Task(compare.Entry("full"), tmp_path / str(s), s, 1e-3, f"seed {s}") for s in range(4)]
    runs = compare.run_tasks(compare.Budget(), tasks, "cpu", jobs=2)
    assert [r[0]["run_dir"] for r in runs] == [str(t.run_dir) for t in tasks]  # results in the tasks' order
    assert sorted(calls) == [(str(s), 2) for s in range(4)]
    with pytest.raises(ValueError, match="--jobs must be an integer >= 1, got 0"):
        compare.run_tasks(compare.Budget(), tasks, "cpu", jobs=0)


def test_a_state_that_changes_during_the_run_shows_both_numbers():
    """ReLoRA's optimizer holds the full weights' moments in its warm start and only the factors' afterwards."""
    relora = {**_summary(50.0, 1, rank=16), "optimizer_state_mb": 1.57, "optimizer_state_final_mb": 0.80}
    galore = {**_summary(40.0, 1, rank=16), "optimizer_state_mb": 0.75, "optimizer_state_final_mb": 0.75}
    rows = [compare_table.method_row(m, [s], 1e-3, "sweep") for m, s in (("relora", relora), ("galore", galore))]
    table = compare_table.format_table(rows)
    assert "1.57 → 0.80" in table.splitlines()[2] and "0.75" in table.splitlines()[3]
    assert "→" not in table.splitlines()[3]
