"""The app's actions without Gradio: validation messages per field, dataset paths, command and snippet, memory
bars, launch refusals, the short measuring run."""

from __future__ import annotations

import pytest
from app_fakes import fake_cli, fake_estimate, fake_schema

from hf_pept.app import form, runs
from hf_pept.app.backend import Backend


@pytest.fixture
def backend(tmp_path):
    return Backend(fake_schema(), tmp_path / "runs", estimate=fake_estimate, cli=fake_cli(tmp_path))


def defaults(backend, **changes):
    return {**form.values_to_form(backend.schema.specs, {}), **changes}


def test_valid_form_gives_command_and_snippet_with_only_changed_values(backend):
    state = backend.form_state(defaults(backend, rank="16", learning_rate="3e-4"))
    assert state.errors == {}
    assert state.command == "hf-pept train --learning_rate 0.0003 --rank 16"
    assert "galore_args = FakeGaLore(rank=16)" in state.snippet
    assert "run_args = FakeRunArguments(learning_rate=0.0003)" in state.snippet
    assert "FakeReLoRA" not in state.snippet  # other methods' knobs never reach the command


def test_other_methods_knobs_are_not_validated_or_emitted(backend):
    state = backend.form_state(defaults(backend, method="relora", rank="0", relora_steps="50"))
    assert state.errors == {}
    assert state.command == "hf-pept train --method relora --relora_steps 50"


def test_bad_values_get_the_dataclass_message_and_no_command(backend):
    state = backend.form_state(defaults(backend, rank="0", learning_rate="abc"))
    assert state.errors == {
        "rank": "GaLore `rank` must be >= 1, got 0",
        "learning_rate": "`learning_rate` must be a number, got 'abc'",
    }
    assert state.command == "" and backend.memory_bars(state) == {}
    with pytest.raises(runs.RunError, match="Fix the highlighted fields"):
        backend.launch("x", defaults(backend, rank="0"))


def test_a_dataset_path_that_does_not_exist_is_named(backend, tmp_path):
    state = backend.form_state(defaults(backend, dataset=str(tmp_path / "missing.txt")))
    assert "no file or folder" in state.errors["dataset"]
    (tmp_path / "corpus.txt").write_text("hello")
    assert backend.form_state(defaults(backend, dataset=str(tmp_path / "corpus.txt"))).errors == {}


def test_memory_bars_put_the_chosen_config_beside_the_reference_methods(backend):
    state = backend.form_state(defaults(backend, rank="64"))
    bars = backend.memory_bars(state)
    assert list(bars) == ["this config (galore)", "full-rank AdamW", "lora", "relora", "galore"]
    mb = 2**20
    assert bars["full-rank AdamW"]["optimizer_state"] == pytest.approx(8_000_000 / mb)
    assert bars["this config (galore)"]["optimizer_state"] == pytest.approx(8_000_000 * 64 / 512 / mb)
    assert bars["galore"]["optimizer_state"] == pytest.approx(8_000_000 * 64 / 512 / mb)  # the same rank
    # a LoRA config's estimate still puts GaLore at the form's rank, though GaLore's section is hidden for LoRA
    bars = backend.memory_bars(backend.form_state(defaults(backend, method="lora", rank="32")))
    assert bars["galore"]["optimizer_state"] == pytest.approx(8_000_000 * 32 / 512 / mb)


def test_memory_panels_put_the_1b_estimate_beside_the_run_model_and_pass_no_empty_rank(tmp_path):
    calls = []

    def estimate(method, typed):
        calls.append((method, typed.get("model"), "rank" in typed))
        scale = {"tiny": 1, "60m": 100, "1b": 10_000}[typed["model"]]
        return {name: scale * value for name, value in fake_estimate(method, typed).items()}

    backend = Backend(fake_schema(), tmp_path, estimate=estimate)
    state = backend.form_state(defaults(backend, rank=""))
    panels = backend.memory_panels(state)
    assert list(panels) == ["tiny (the run's model)", "1b"]
    assert list(panels["1b"]) == ["this config (galore)", "full-rank AdamW", "lora", "relora", "galore"]
    tiny, big = panels["tiny (the run's model)"]["full-rank AdamW"], panels["1b"]["full-rank AdamW"]
    assert big["optimizer_state"] == pytest.approx(10_000 * tiny["optimizer_state"])
    assert {model for _, model, _ in calls} == {"tiny", "1b"}
    assert not any(has_rank for _, _, has_rank in calls)  # an empty rank is the estimate's own default
    # another size in place of the run's model; 1b chosen is shown once
    assert list(backend.memory_panels(state, "60m")) == ["60m", "1b"]
    assert list(backend.memory_panels(state, "1b")) == ["1b"]
    assert list(backend.memory_panels(backend.form_state(defaults(backend, model="1b")))) == ["1b (the run's model)"]


def test_load_command_round_trips_through_the_parser(backend):
    values = backend.load_command("hf-pept train --method relora --relora_steps 50 --max_steps 7")
    assert values["method"] == "relora" and values["relora_steps"] == "50" and values["max_steps"] == "7"
    assert values["rank"] == ""  # not on the command line: the default
    with pytest.raises(ValueError, match="invalid choice"):
        backend.load_command("hf-pept train --method sgd")


def test_launch_stop_and_busy_folder(backend):
    info = backend.launch("r1", defaults(backend))
    assert info.status == "running" and info.command[:2] == ["hf-pept", "train"]
    with pytest.raises(runs.RunError, match="busy"):
        backend.launch("r1", defaults(backend))
    assert backend.stop("r1").status == "stopped"
    with pytest.raises(runs.RunError, match="Select a run"):
        backend.stop("")
    generated = backend.launch("", defaults(backend, max_steps="2"))
    assert generated.name.startswith("galore-tiny-")


def test_measure_runs_a_few_steps_and_reads_the_peak(backend):
    state = backend.form_state(defaults(backend))
    summary = backend.measure(state, timeout=30)
    assert summary["peak_memory_mb"] == 42.5
    assert not backend.list_runs()  # the scratch run is not one of the user's runs


def test_compare_table_reads_the_newest_comparison_csv(backend):
    assert backend.compare_table() == (None, [])
    folder = backend.runs_root / "compare-1"
    folder.mkdir(parents=True)
    (folder / "comparison.csv").write_text("method,eval perplexity\nfull,30.1\ngalore,30.9\n")
    path, rows = backend.compare_table()
    assert path == folder / "comparison.csv"
    assert rows == [["method", "eval perplexity"], ["full", "30.1"], ["galore", "30.9"]]
    assert backend.compare_notes(path) == []
    table = "method | eval ppl\n-------+---------\nfull   |    30.10\n"
    notes = "model: 'tiny'\neval ppl: a unigram model scores 199.7\n\ncpu: 2 cores; total 3 s\n"
    (folder / "comparison.txt").write_text(table + "\n" + notes)
    assert backend.compare_notes(path) == [
        "model: 'tiny'",
        "eval ppl: a unigram model scores 199.7",
        "cpu: 2 cores; total 3 s",
    ]


def test_the_runs_of_a_compare_folder_are_listed_charted_and_compared(backend):
    folder = backend.runs_root / "compare"
    for method, ppl in (("full", 30.1), ("galore", 30.9)):
        (folder / method).mkdir(parents=True)
        (folder / method / "summary.json").write_text(f'{{"method": "{method}", "eval_perplexity": {ppl}}}')
        (folder / method / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    (folder / "comparison.csv").write_text("method,eval perplexity\nfull,30.1\ngalore,30.9\n")
    assert sorted(info.name for info in backend.list_runs()) == ["compare/full", "compare/galore"]
    assert [run.name for run in backend.metrics(["compare/galore"])] == ["compare/galore"]
    assert backend.metrics(["compare/galore"])[0].series("loss") == ([1], [3.0])
    rows = sorted(backend.comparison(), key=lambda row: row["run"])
    assert [(row["run"], row["eval_perplexity"]) for row in rows] == [("compare/full", 30.1), ("compare/galore", 30.9)]
    # (also before `hf-pept compare` has written its table: a method's run is compared once it has finished)
    (folder / "comparison.csv").unlink()
    assert len(backend.comparison()) == 2


@pytest.mark.parametrize("name", ["../outside", "/etc"])
def test_a_run_name_outside_the_runs_folder_is_refused(backend, name):
    backend.runs_root.mkdir(parents=True)
    (backend.runs_root.parent / "outside").mkdir()
    with pytest.raises(runs.RunError, match="No run folder"):
        backend.stop(name)
    assert backend.metrics([name]) == []
