"""Live charts from run folders: ``metrics.jsonl`` read tolerantly, drawn with matplotlib, several runs overlaid.

A run still being written may end in a half line; it is skipped and read on the next poll. Event records
(``{"event": "relora_merge", "step": ...}``) become vertical markers on the loss and learning-rate panels, which is
where ReLoRA's jagged schedule, GaLore's projector refreshes and SwitchLoRA's switches are visible.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from hf_pept.events import EVENT_KEY

METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"

# (key in metrics.jsonl, panel title with unit)
PANELS = (
    ("loss", "training loss (raw, and EMA-smoothed)"),
    ("eval_perplexity", "eval perplexity"),
    ("lr", "learning rate"),
    ("tokens_per_second", "throughput (tokens/s)"),
    ("peak_memory_mb", "peak memory (MB)"),
    ("grad_norm", "gradient norm"),
)
EVENT_STYLES = {
    "relora_merge": {"color": "tab:red", "linestyle": "--"},
    "optimizer_reset": {"color": "tab:orange", "linestyle": ":"},
    "projector_update": {"color": "tab:green", "linestyle": ":"},
    # hf_pept.sst: new active singular vectors each iteration, a re-SVD each round
    "sst_resample": {"color": "tab:cyan", "linestyle": ":"},
    "sst_resvd": {"color": "tab:brown", "linestyle": "--"},
    # hf_pept.divergence: an update skipped for a non-finite gradient, and the guard stopping the run
    "nonfinite_update_skipped": {"color": "tab:purple", "linestyle": "-"},
    "training_stopped": {"color": "black", "linestyle": "-"},
    "switchlora_switch": {"color": "tab:brown", "linestyle": ":"},
}
MARKED_PANELS = ("loss", "lr")
# matplotlib's "tab10" cycle, written out so that a run's colour is chosen without matplotlib
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
MAX_MARKERS_PER_EVENT = 200  # a projector refresh every few steps would otherwise hide the curves


@dataclass
class RunMetrics:
    name: str
    records: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)

    def series(self, key: str) -> tuple[list[int], list[float]]:
        steps, values = [], []
        for record in self.records:
            value = record.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                steps.append(int(record.get("step", len(steps))))
                values.append(float(value))
        return steps, values


def read_metrics(run_dir: str | Path, name: str | None = None) -> RunMetrics:
    """All complete lines of ``run_dir/metrics.jsonl`` split into metric records and event records, under the
    run's ``name`` (default: its folder's name)."""
    run_dir = Path(run_dir)
    metrics = RunMetrics(name=name or run_dir.name)
    try:
        text = (run_dir / METRICS_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return metrics
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if not isinstance(record, dict):
            continue
        (metrics.events if EVENT_KEY in record else metrics.records).append(record)
    return metrics


def smooth(values: list[float], weight: float = 0.9) -> list[float]:
    """Debiased exponential moving average, s_t = w·s_{t-1} + (1-w)·x_t, divided by (1 - w^t) (Adam's bias
    correction), so the first points are not pulled toward 0."""
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight!r}")
    out, running = [], 0.0
    for t, value in enumerate(values, start=1):
        running = weight * running + (1.0 - weight) * value
        out.append(running / (1.0 - weight**t))
    return out


def points_summary(runs: list[RunMetrics]) -> str:
    """One line per run: how many loss points, the last step and loss (the live status under the charts)."""
    if not runs:
        return "No run selected."
    lines = []
    for run in runs:
        steps, losses = run.series("loss")
        if steps:
            lines.append(f"{run.name}: {len(steps)} loss points, step {steps[-1]}, loss {losses[-1]:.4f}")
        else:
            lines.append(f"{run.name}: 0 loss points yet")
    return "\n".join(lines)


def run_colors(names: list[str], assigned: dict[str, str] | None = None) -> dict[str, str]:
    """A colour per run that stays the run's own: the runs in ``assigned`` keep theirs, each new one (in name
    order) takes the palette's first least-used colour, so runs get distinct colours in order of first appearance
    until the palette is used up. Runs no longer in ``names`` are dropped."""
    colors = {name: color for name, color in (assigned or {}).items() if name in names}
    for name in sorted(set(names) - colors.keys()):
        uses = Counter(colors.values())
        colors[name] = min(PALETTE, key=lambda color: uses[color])
    return colors


def _figure(figsize: tuple[float, float]):
    """A figure outside pyplot's registry: the app draws one every refresh, and pyplot would keep them all."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def training_figure(runs: list[RunMetrics], smoothing: float = 0.9, colors: dict[str, str] | None = None):
    """A 2×3 grid of the PANELS, each run in its colour (``colors``, see :func:`run_colors`), events as vertical
    lines on the loss and LR panels."""
    colors = run_colors([run.name for run in runs], colors)
    fig = _figure(figsize=(13, 6.5))
    axes = fig.subplots(2, 3)
    for ax, (key, title) in zip(axes.flat, PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        drawn = False
        for run in runs:
            color = colors[run.name]
            steps, values = run.series(key)
            if not steps:
                continue
            drawn = True
            if key == "loss":
                ax.plot(steps, values, color=color, alpha=0.3, linewidth=1)
                ax.plot(steps, smooth(values, smoothing), color=color, linewidth=1.8, label=run.name)
            else:
                ax.plot(steps, values, color=color, linewidth=1.5, marker="." if len(steps) < 30 else None)
            if key in MARKED_PANELS:
                _draw_events(ax, run.events)
        if key == "eval_perplexity" and _spans_decades(ax):
            ax.set_yscale("log")  # early perplexities (~vocab size) would flatten the rest
        if not drawn:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    handles += _event_legend(runs)
    if handles:
        axes.flat[0].legend(handles=handles, fontsize=7, loc="upper right")
    return fig


def _spans_decades(ax) -> bool:
    values = [v for line in ax.lines for v in line.get_ydata() if v > 0]
    return bool(values) and max(values) / min(values) > 10


def _draw_events(ax, events: list[dict]) -> None:
    counts: dict[str, int] = {}
    for event in events:
        name = event.get(EVENT_KEY)
        style = EVENT_STYLES.get(name)
        step = event.get("step")
        if style is None or step is None or counts.get(name, 0) >= MAX_MARKERS_PER_EVENT:
            continue
        counts[name] = counts.get(name, 0) + 1
        ax.axvline(step, linewidth=0.8, alpha=0.7, **style)


def _event_legend(runs: list[RunMetrics]) -> list:
    from matplotlib.lines import Line2D

    present = {event.get(EVENT_KEY) for run in runs for event in run.events}
    return [
        Line2D([], [], linewidth=0.8, label=name.replace("_", " "), **style)
        for name, style in EVENT_STYLES.items()
        if name in present
    ]


def read_summary(run_dir: str | Path) -> dict | None:
    try:
        summary = json.loads((Path(run_dir) / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def comparison_rows(run_dirs: list[Path], root: Path | None = None) -> list[dict]:
    """One row per finished run from its ``summary.json`` (the same file ``hf-pept compare`` tabulates), named by
    its path under ``root`` (or its folder name)."""
    rows = []
    for run_dir in run_dirs:
        summary = read_summary(run_dir)
        if summary is not None:
            run_dir = Path(run_dir)
            name = run_dir.relative_to(root).as_posix() if root and run_dir.is_relative_to(root) else run_dir.name
            rows.append({"run": name, **{k: v for k, v in summary.items() if _is_scalar(v)}})
    return rows


def _is_scalar(value) -> bool:
    return value is None or isinstance(value, (int, float, str, bool))


def group_rows(rows: list[dict], key: str, order: tuple[str, ...] = ()) -> dict[str, list[dict]]:
    """Rows by their ``key`` value (``"?"`` where missing), the groups in ``order`` first, then by name."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(str(row.get(key) or "?"), []).append(row)
    rank = {name: index for index, name in enumerate(order)}
    return {name: groups[name] for name in sorted(groups, key=lambda name: (rank.get(name, len(rank)), name))}


def perplexity_memory_figure(
    groups: dict[str, list[dict]], perplexity_key: str, memory_key: str, colors: dict[str, str] | None = None
):
    """Eval perplexity against peak memory, one scatter per group (model size: perplexities of different sizes
    are not compared on one axis), one labelled point per finished run in its colour."""
    colors = run_colors([str(row["run"]) for rows in groups.values() for row in rows], colors)
    fig = _figure(figsize=(5.0 * len(groups) + 1.5, 4.5))
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    for ax, (group, rows) in zip(axes, groups.items()):
        ax.set_xlabel("peak memory (MB)")
        ax.set_title(f"model {group}", fontsize=10)
        for row in rows:
            x, y = row.get(memory_key), row.get(perplexity_key)
            if _is_number(x) and _is_number(y):
                ax.scatter([x], [y], s=40, color=colors[str(row["run"])])
                ax.annotate(str(row["run"]), (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if not ax.collections:
            ax.text(0.5, 0.5, "no run with both", ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[0].set_ylabel("eval perplexity")
    return fig


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_number(value) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for kind in (int, float):
            try:
                return kind(value.strip())
            except ValueError:
                continue
    return None


def format_value(key: str, value) -> str:
    """A table cell, rounded to what its unit needs: perplexity 2 decimals, MB and seconds 1, tokens/s and
    counts whole, losses 4, percentages 1 with a sign, other fractions 4 significant digits; text as it is."""
    number = _as_number(value)
    if number is None:
        return "" if value is None else str(value)
    if not math.isfinite(number):
        return "n/a"
    name = key.lower()
    if "perplexity" in name:
        return f"{number:.2f}"
    if name.endswith("_mb") or "(mb)" in name:
        return f"{number:,.1f}"
    if "pct" in name or "%" in name:
        return f"{number:+.1f}"
    if "loss" in name:
        return f"{number:.4f}"
    if "per_second" in name or "tokens/s" in name:
        return f"{number:,.0f}"
    if name.endswith(("_s", "seconds")) or "(s)" in name:
        return f"{number:,.1f}"
    if float(number).is_integer():
        return f"{int(number):,}"
    return f"{number:.4g}"


def format_rows(rows: list[dict], first: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """The rows with every cell formatted by :func:`format_value`, the ``first`` columns leading."""
    columns = [key for key in first if any(key in row for row in rows)]
    columns += [key for row in rows for key in row if key not in columns]
    columns = list(dict.fromkeys(columns))
    return [{key: format_value(key, row.get(key)) for key in columns} for row in rows]
