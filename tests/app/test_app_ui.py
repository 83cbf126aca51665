"""The UI's handlers as Gradio calls them: each test builds the whole app on the fake schema, finds the function
wired to an event, calls it with the components' current values (changed where the test says) and checks that
it updates only components it is wired to."""

from __future__ import annotations

import pytest
from app_fakes import fake_cli, fake_estimate, fake_schema

from hf_pept.app.backend import Backend

gr = pytest.importorskip("gradio")
ui = pytest.importorskip("hf_pept.app.ui")


@pytest.fixture
def backend(tmp_path):
    return Backend(fake_schema(), tmp_path / "runs", estimate=fake_estimate, cli=fake_cli(tmp_path))


@pytest.fixture
def demo(backend):
    return ui.build_ui(backend)


def component(demo, elem_id: str):
    return next(block for block in demo.blocks.values() if getattr(block, "elem_id", None) == elem_id)


def field(demo, name: str):
    return component(demo, f"field-{name}")


def handler(demo, name: str):
    """The first event function wired to the handler called ``name``."""
    found = [fn for fn in demo.fns.values() if getattr(fn.fn, "func", fn.fn).__name__ == name]
    assert found, f"no event runs {name}"
    return found[0]


def call(demo, name: str, values: dict | None = None):
    """Run the handler called ``name`` on the components' current values (``values`` where given)."""
    fn = handler(demo, name)
    values = values or {}
    out = fn.fn(*[values[c] if c in values else c.value for c in fn.inputs])
    if len(fn.outputs) > 1:
        assert isinstance(out, dict) and set(out) <= set(fn.outputs), "updates a component it is not wired to"
    return out


def test_launch_and_measure_are_disabled_while_the_form_has_errors(demo):
    launch, measure = component(demo, "launch"), component(demo, "measure")
    out = call(demo, "on_form", values={field(demo, "learning_rate"): "fast"})
    assert out[launch]["interactive"] is False and out[measure]["interactive"] is False
    assert "must be a number" in out[component(demo, "error-learning_rate")]["value"]
    out = call(demo, "on_form", values={field(demo, "learning_rate"): "0.01"})
    assert out[launch]["interactive"] is True and out[measure]["interactive"] is True


def test_a_launch_error_is_cleared_when_the_form_changes_and_a_report_is_kept(demo, backend):
    message = component(demo, "launch-message")
    # a launch refused for a bad name leaves an error message; the next form change clears it
    out = call(demo, "on_launch", values={component(demo, "run-name"): "a b"})
    assert out[message].startswith(ui.ERROR_MARK) and "not valid" in out[message]
    out = call(demo, "on_form", values={message: out[message], field(demo, "max_steps"): "5"})
    assert out[message] == ""
    # so does a new run name
    out = call(demo, "clear_error", values={message: "⚠ Run name 'a b' is not valid"})
    assert out == ""
    # what was done stays (the form changes right after a command is loaded into it)
    out = call(demo, "on_form", values={message: "Command loaded into the form."})
    assert message not in out
    assert call(demo, "clear_error", values={message: "Launched **r1**"}) == gr.update()


def write_run(runs_root, name: str, steps: int = 3) -> None:
    run_dir = runs_root / name
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.jsonl").write_text(
        "".join(f'{{"step": {s}, "loss": {3.0 / s}}}\n' for s in range(1, steps + 1))
    )
    (run_dir / "summary.json").write_text('{"model": "tiny", "eval_perplexity": 20.5, "peak_memory_mb": 30.25}')


def loss_colors(figure) -> dict[str, str]:
    return {
        line.get_label(): line.get_color() for line in figure.axes[0].lines if not line.get_label().startswith("_")
    }


def test_a_run_keeps_its_colour_across_refreshes_and_tabs(demo, backend):
    pytest.importorskip("matplotlib")
    from matplotlib.colors import to_hex

    shown, chart = component(demo, "shown-runs"), component(demo, "training-chart")
    (colors,) = set(handler(demo, "on_refresh").inputs) & set(handler(demo, "on_compare").inputs)  # shared state
    write_run(backend.runs_root, "galore-b")
    write_run(backend.runs_root, "relora-c")
    out = call(demo, "on_refresh", values={shown: ["galore-b", "relora-c"]})
    before = loss_colors(out[chart])
    assert len(set(before.values())) == 2
    # a new run, first in name order, appears and is shown too: the two keep their colours
    write_run(backend.runs_root, "full-a")
    out = call(demo, "on_refresh", values={shown: ["full-a", "galore-b", "relora-c"], colors: out[colors]})
    after = loss_colors(out[chart])
    assert {name: after[name] for name in before} == before and after["full-a"] not in before.values()
    # the Compare tab's scatter draws each run in the same colour
    out = call(demo, "on_compare", values={colors: out[colors]})
    figure = next(value for key, value in out.items() if key.__class__ is gr.Plot)
    points = {
        text.get_text(): to_hex(dots.get_facecolor()[0])
        for text, dots in zip(figure.axes[0].texts, figure.axes[0].collections)
    }
    assert points == after


def test_the_memory_panel_follows_the_run_model_or_the_chosen_size_with_1b_beside_it(demo):
    size, table = component(demo, "memory-size"), component(demo, "memory-table")
    assert size.value == ui.RUN_MODEL and "60m" in [value for _, value in size.choices]
    out = call(demo, "on_form")
    assert "**at tiny (the run's model)**" in out[table] and "**at 1b**" in out[table]
    out = call(demo, "on_form", values={size: "60m"})
    assert "**at 60m**" in out[table] and "**at 1b**" in out[table] and "tiny" not in out[table]
    wired = [fn for fn in demo.fns.values() if getattr(fn.fn, "func", None) is ui.on_form]
    assert any((size._id, "change") in [tuple(target) for target in fn.targets] for fn in wired)


def test_compare_separates_model_sizes_and_rounds_its_numbers(demo, backend):
    import json

    for name, model, ppl in (
        ("big", "60m", 30.123456),
        ("small", "tiny", 90.987654),
        ("compare/galore", "20m", 40.14272689819336),
    ):
        write_run(backend.runs_root, name)
        summary = {
            "model": model,
            "method": "galore",
            "eval_perplexity": ppl,
            "peak_memory_mb": 30.25,
            "tokens_per_second": 1234.56,
        }
        (backend.runs_root / name / "summary.json").write_text(json.dumps(summary))
    (backend.runs_root / "compare" / "comparison.csv").write_text(
        "method,eval_perplexity,peak_memory_mb\ngalore,40.14272689819336,812.345\n"
    )
    (backend.runs_root / "compare" / "comparison.txt").write_text(
        "method | eval ppl\n-------+---------\ngalore |    40.14\n\neval ppl: a unigram model scores 199.7 there\n"
    )
    out = call(demo, "on_compare")
    assert "\n- eval ppl: a unigram model scores 199.7 there" in out[component(demo, "compare-notes")]
    figure = out[component(demo, "compare-plot")]
    assert [ax.get_title() for ax in figure.axes] == ["model tiny", "model 20m", "model 60m"]
    table = out[component(demo, "compare-table")]
    assert list(table.columns[:5]) == ["run", "model", "method", "eval_perplexity", "peak_memory_mb"]
    assert table[["run", "eval_perplexity", "peak_memory_mb", "tokens_per_second"]].values.tolist() == [
        ["small", "90.99", "30.2", "1,235"],
        ["compare/galore", "40.14", "30.2", "1,235"],
        ["big", "30.12", "30.2", "1,235"],
    ]
    assert out[component(demo, "compare-csv")]["value"].values.tolist() == [["galore", "40.14", "812.3"]]
