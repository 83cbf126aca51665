"""Memory panel: components read from an estimate (mapping or object), the stacked bars, the measured column."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from hf_pept.app import memory_view

MB = 2**20


def test_breakdown_reads_mappings_and_objects_and_names_a_missing_component():
    parts = {"weights": 4 * MB, "gradients": 4 * MB, "optimizer_state": 8 * MB, "activations": MB}
    assert memory_view.breakdown_mb(parts) == {
        "weights": 4.0,
        "gradients": 4.0,
        "optimizer_state": 8.0,
        "activations": 1.0,
    }
    assert memory_view.breakdown_mb(SimpleNamespace(**parts)) == memory_view.breakdown_mb(parts)
    with pytest.raises(ValueError, match="no `activations`"):
        memory_view.breakdown_mb({k: v for k, v in parts.items() if k != "activations"})


def test_table_totals_and_measured_ratio_per_model_size():
    bars = {
        "this config (galore)": {"weights": 4.0, "gradients": 4.0, "optimizer_state": 1.0, "activations": 1.0},
        "full-rank AdamW": {"weights": 4.0, "gradients": 4.0, "optimizer_state": 8.0, "activations": 1.0},
    }
    table = memory_view.memory_table({"tiny (the run's model)": bars, "1b": bars}, {"1b": {"full-rank AdamW": 34.0}})
    first, second = table.split("\n\n**at 1b**\n\n")
    assert first.splitlines()[0] == "**at tiny (the run's model)**"
    rows = first.splitlines()[4:]
    assert rows[0] == "| this config (galore) | 4.0 | 4.0 | 1.0 | 1.0 | 10.0 |  |"
    assert rows[1] == "| full-rank AdamW | 4.0 | 4.0 | 8.0 | 1.0 | 17.0 |  |"
    assert second.splitlines()[3] == "| full-rank AdamW | 4.0 | 4.0 | 8.0 | 1.0 | 17.0 | 34.0 (2.00× est.) |"


def test_figure_stacks_the_four_components_in_one_panel_per_size():
    pytest.importorskip("matplotlib")
    bars = {"a": {"weights": 1.0, "gradients": 2.0, "optimizer_state": 3.0, "activations": 4.0}}
    big = {"a": {"weights": 10.0, "gradients": 20.0, "optimizer_state": 30.0, "activations": 4.0}}
    fig = memory_view.memory_figure({"tiny": bars, "1b": big}, {"tiny": {"a": 9.0}})
    small_ax, big_ax = fig.axes[:2]
    assert [(p.get_y(), p.get_height()) for p in small_ax.patches] == [(0.0, 1.0), (1.0, 2.0), (3.0, 3.0), (6.0, 4.0)]
    assert [p.get_height() for p in big_ax.patches] == [10.0, 20.0, 30.0, 4.0]
    assert small_ax.collections[0].get_offsets().tolist() == [[0.0, 9.0]] and not big_ax.collections
    assert (small_ax.get_title(), big_ax.get_title()) == ("at tiny", "at 1b")


def test_measured_note_puts_measured_beside_estimated_optimizer_state():
    summary = {
        "steps": 5,
        "peak_memory_mb": 700.0,
        "peak_memory_kind": "process_peak_rss",
        "memory_at_train_start_mb": 650.0,
        "optimizer_state_mb": 1.27,
    }
    note = memory_view.measured_note(summary, {"optimizer_state": 1.268})
    assert note == (
        "Measured over 5 steps: peak 700.0 MB (process_peak_rss). At the start of training: 650.0 MB. "
        "Optimizer state: measured 1.27 MB, estimated 1.27 MB."
    )
