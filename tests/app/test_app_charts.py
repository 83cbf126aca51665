"""Reading metrics.jsonl (events split off, half-written lines skipped), the EMA smoothing, the chart figures."""

from __future__ import annotations

import json

import pytest

from hf_pept.app import charts


def write_metrics(run_dir, lines):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(lines))


def test_read_metrics_splits_events_and_skips_a_half_written_last_line(tmp_path):
    lines = [json.dumps({"step": s, "loss": 5.0 - s, "lr": 1e-3}) + "\n" for s in (1, 2, 3)]
    lines.insert(2, json.dumps({"event": "relora_merge", "step": 2}) + "\n")
    lines.append('{"step": 4, "lo')
    write_metrics(tmp_path / "run", lines)
    metrics = charts.read_metrics(tmp_path / "run")
    assert [r["step"] for r in metrics.records] == [1, 2, 3]
    assert metrics.events == [{"event": "relora_merge", "step": 2}]
    assert metrics.series("loss") == ([1, 2, 3], [4.0, 3.0, 2.0])


def test_series_skips_missing_and_non_finite_values(tmp_path):
    lines = [
        json.dumps(r) + "\n"
        for r in (
            {"step": 1, "loss": 2.0},
            {"step": 2, "eval_perplexity": 9.0},
            {"step": 3, "loss": float("nan")},
            {"step": 4, "loss": 1.0},
        )
    ]
    write_metrics(tmp_path / "run", lines)
    metrics = charts.read_metrics(tmp_path / "run")
    assert metrics.series("loss") == ([1, 4], [2.0, 1.0])
    assert metrics.series("eval_perplexity") == ([2], [9.0])


def test_missing_folder_reads_as_no_points(tmp_path):
    metrics = charts.read_metrics(tmp_path / "nothing")
    assert metrics.records == [] and metrics.events == []
    assert "0 loss points" in charts.points_summary([metrics])


def test_smoothing_is_the_debiased_ema():
    values = [4.0, 2.0, 6.0]
    w = 0.5
    # written out: s1 = (1-w)x1 / (1-w), s2 = (w(1-w)x1 + (1-w)x2) / (1-w²), ...
    expected = [
        4.0,
        (w * (1 - w) * 4 + (1 - w) * 2) / (1 - w**2),
        (w * w * (1 - w) * 4 + w * (1 - w) * 2 + (1 - w) * 6) / (1 - w**3),
    ]
    assert charts.smooth(values, w) == pytest.approx(expected)
    assert charts.smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])
    with pytest.raises(ValueError, match="smoothing weight"):
        charts.smooth(values, 1.0)


def test_training_figure_overlays_runs_and_marks_events(tmp_path):
    pytest.importorskip("matplotlib")
    for name, event in (("galore", "projector_update"), ("relora", "relora_merge")):
        lines = [json.dumps({"step": s, "loss": 6.0 / s, "lr": 1e-3 * s}) + "\n" for s in range(1, 6)]
        lines.append(json.dumps({"event": event, "step": 3}) + "\n")
        write_metrics(tmp_path / name, lines)
    runs = [charts.read_metrics(tmp_path / n) for n in ("galore", "relora")]
    fig = charts.training_figure(runs)
    loss_ax, _, lr_ax = fig.axes[:3]
    assert len([line for line in loss_ax.lines if len(line.get_xdata()) == 5]) == 4  # raw + smoothed per run
    markers = [line for line in lr_ax.lines if list(line.get_xdata()) == [3, 3]]
    assert len(markers) == 2
    labels = [text.get_text() for text in loss_ax.get_legend().get_texts()]
    assert {"galore", "relora", "relora merge", "projector update"} <= set(labels)
    assert "relora: 5 loss points, step 5" in charts.points_summary(runs)


def test_comparison_rows_come_from_summaries_of_finished_runs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "summary.json").write_text(
        json.dumps({"method": "galore", "eval_perplexity": 30.5, "peak_memory_mb": 120.0, "nested": {"x": 1}})
    )
    (tmp_path / "b").mkdir()  # still running: no summary
    rows = charts.comparison_rows([tmp_path / "a", tmp_path / "b"])
    assert rows == [{"run": "a", "method": "galore", "eval_perplexity": 30.5, "peak_memory_mb": 120.0}]
    pytest.importorskip("matplotlib")
    fig = charts.perplexity_memory_figure({"20m": rows}, "eval_perplexity", "peak_memory_mb")
    assert fig.axes[0].collections[0].get_offsets().tolist() == [[120.0, 30.5]]


def test_runs_of_different_model_sizes_get_one_scatter_each():
    pytest.importorskip("matplotlib")
    rows = [
        {"run": "a", "model": "60m", "eval_perplexity": 30.0, "peak_memory_mb": 500.0},
        {"run": "b", "model": "tiny", "eval_perplexity": 90.0, "peak_memory_mb": 20.0},
        {"run": "c", "model": "60m", "eval_perplexity": 32.0, "peak_memory_mb": 300.0},
        {"run": "d", "eval_perplexity": 50.0, "peak_memory_mb": 40.0},  # an older summary without its model
    ]
    groups = charts.group_rows(rows, "model", order=("tiny", "20m", "60m"))
    assert {name: [row["run"] for row in group] for name, group in groups.items()} == {
        "tiny": ["b"],
        "60m": ["a", "c"],
        "?": ["d"],
    }
    assert list(groups) == ["tiny", "60m", "?"]  # sizes in their order, before the unknown
    fig = charts.perplexity_memory_figure(groups, "eval_perplexity", "peak_memory_mb")
    panels = fig.axes[:3]
    assert [ax.get_title() for ax in panels] == ["model tiny", "model 60m", "model ?"]
    points = [[c.get_offsets().tolist()[0] for c in ax.collections] for ax in panels]
    assert points == [[[20.0, 90.0]], [[500.0, 30.0], [300.0, 32.0]], [[40.0, 50.0]]]


@pytest.mark.parametrize(
    "key, value, shown",
    [
        ("eval_perplexity", 40.14272689819336, "40.14"),
        ("eval perplexity", "40.14272689819336", "40.14"),  # a comparison.csv cell
        ("peak_memory_mb", 1234.5678, "1,234.6"),
        ("optimizer state (MB)", "0.123456", "0.1"),
        ("tokens_per_second", 10543.77, "10,544"),
        ("wall_time_s", 61.25, "61.2"),
        ("train_seconds", "12.04", "12.0"),
        ("eval_loss", 3.692871, "3.6929"),
        ("gap_to_full_pct", 2.345, "+2.3"),
        ("trained_params", 1234567, "1,234,567"),
        ("steps", 200, "200"),
        ("lr", 0.000123456, "0.0001235"),
        ("method", "galore", "galore"),
        ("fira", True, "True"),
        ("eval_perplexity", None, ""),
        ("eval_perplexity", float("nan"), "n/a"),
    ],
)
def test_table_numbers_are_rounded_to_their_unit(key, value, shown):
    assert charts.format_value(key, value) == shown


def test_format_rows_puts_the_named_columns_first():
    rows = [{"steps": 3, "eval_perplexity": 12.345, "run": "a"}, {"run": "b", "model": "1b"}]
    assert charts.format_rows(rows, first=("run", "model", "eval_perplexity")) == [
        {"run": "a", "model": "", "eval_perplexity": "12.35", "steps": "3"},
        {"run": "b", "model": "1b", "eval_perplexity": "", "steps": ""},
    ]


def test_figures_are_not_kept_by_pyplot(tmp_path):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = len(plt.get_fignums())
    for _ in range(3):
        charts.training_figure([charts.read_metrics(tmp_path)])
    assert len(plt.get_fignums()) == before  # a 2-second refresh would otherwise leak one figure per tick


def test_run_colors_stay_with_their_run_as_runs_come_and_go():
    first = charts.run_colors(["b", "c"])
    assert len(set(first.values())) == 2
    # a new run whose name sorts first takes a free colour; the others keep theirs
    second = charts.run_colors(["a", "b", "c"], first)
    assert {name: second[name] for name in ("b", "c")} == first and second["a"] not in first.values()
    assert charts.run_colors(["c"], second) == {"c": first["c"]}  # a run gone gives its colour back
    many = charts.run_colors([f"run{i}" for i in range(len(charts.PALETTE))])
    assert sorted(many.values()) == sorted(charts.PALETTE)  # distinct until the palette is used up


def test_each_figure_draws_a_run_in_its_given_colour(tmp_path):
    pytest.importorskip("matplotlib")
    for name in ("a", "b"):
        write_metrics(tmp_path / name, [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2)])
    colors = {"a": charts.PALETTE[3], "b": charts.PALETTE[0]}  # not the palette's order
    fig = charts.training_figure([charts.read_metrics(tmp_path / n) for n in ("a", "b")], colors=colors)
    assert {line.get_label(): line.get_color() for line in fig.axes[0].lines if line.get_label() in colors} == colors
    rows = [{"run": name, "eval_perplexity": 10.0, "peak_memory_mb": 5.0} for name in ("a", "b")]
    fig = charts.perplexity_memory_figure({"tiny": rows}, "eval_perplexity", "peak_memory_mb", colors)
    drawn = [matplotlib_hex(points.get_facecolor()[0]) for points in fig.axes[0].collections]
    assert drawn == [colors["a"], colors["b"]]


def matplotlib_hex(rgba) -> str:
    from matplotlib.colors import to_hex

    return to_hex(rgba)


def test_every_event_the_cli_records_has_a_marker_style():
    from hf_pept.divergence import SKIP_EVENT, STOP_EVENT
    from hf_pept.galore.optimizer import PROJECTOR_EVENT

    assert {SKIP_EVENT, STOP_EVENT, PROJECTOR_EVENT, "relora_merge", "optimizer_reset"} <= set(charts.EVENT_STYLES)
    assert {"sst_resample", "sst_resvd"} <= set(charts.EVENT_STYLES)
