"""Memory panel: stacked bars of estimated weights / gradients / optimizer state / activations per method,
the chosen configuration beside full-rank AdamW, LoRA, ReLoRA and GaLore at the same model size, one panel per
model size (the run's, and 1B, where the methods' differences show), and the measured peak of a short run next
to its estimate."""

from __future__ import annotations

COMPONENTS = ("weights", "gradients", "optimizer_state", "activations")
COMPONENT_COLORS = {
    "weights": "#4c72b0",
    "gradients": "#dd8452",
    "optimizer_state": "#55a868",
    "activations": "#c44e52",
}
MB = 2**20


def breakdown_mb(estimate) -> dict[str, float]:
    """The four components (in MB) of an estimate given as a mapping or an object with those attributes."""
    out = {}
    for name in COMPONENTS:
        value = estimate.get(name) if isinstance(estimate, dict) else getattr(estimate, name, None)
        if value is None:
            raise ValueError(f"memory estimate has no `{name}` (got {estimate!r})")
        out[name] = float(value) / MB
    return out


def memory_figure(
    panels: dict[str, dict[str, dict[str, float]]], measured_mb: dict[str, dict[str, float]] | None = None
):
    """One panel of stacked bars (MB) per model size, side by side, each on its own scale; a measured peak
    (``measured_mb[panel][label]``) is drawn as a black marker on its bar."""
    from .charts import _figure

    fig = _figure(figsize=(5.5 * len(panels), 3.8))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, bars) in zip(axes, panels.items()):
        _draw_bars(ax, bars, (measured_mb or {}).get(title, {}))
        ax.set_title(f"at {title}", fontsize=10)
    axes[0].set_ylabel("MB (estimated)")
    handles, names = [], []
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    axes[-1].legend(handles, names, fontsize=7, loc="upper right")
    return fig


def _draw_bars(ax, bars: dict[str, dict[str, float]], measured_mb: dict[str, float]) -> None:
    labels = list(bars)
    bottoms = [0.0] * len(labels)
    for component in COMPONENTS:
        heights = [bars[label][component] for label in labels]
        ax.bar(labels, heights, bottom=bottoms, color=COMPONENT_COLORS[component], label=component.replace("_", " "))
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    for index, label in enumerate(labels):
        ax.annotate(f"{bottoms[index]:,.1f}", (index, bottoms[index]), ha="center", va="bottom", fontsize=8)
        if label in measured_mb:
            ax.scatter([index], [measured_mb[label]], color="black", marker="D", zorder=3, label="measured peak")
    ax.tick_params(axis="x", labelsize=8, labelrotation=20)


def memory_table(
    panels: dict[str, dict[str, dict[str, float]]], measured_mb: dict[str, dict[str, float]] | None = None
) -> str:
    """Markdown tables of the panels' bars, each under its model size, with the measured peak and its ratio to
    the estimate where measured."""
    return "\n\n".join(
        f"**at {title}**\n\n{_bars_table(bars, (measured_mb or {}).get(title, {}))}" for title, bars in panels.items()
    )


def _bars_table(bars: dict[str, dict[str, float]], measured_mb: dict[str, float]) -> str:
    header = "| config | weights | gradients | optimizer state | activations | total (MB) | measured peak (MB) |"
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|"]
    for label, parts in bars.items():
        total = sum(parts.values())
        measured = ""
        if label in measured_mb and total:
            measured = f"{measured_mb[label]:,.1f} ({measured_mb[label] / total:.2f}× est.)"
        cells = " | ".join(f"{parts[c]:,.1f}" for c in COMPONENTS)
        lines.append(f"| {label} | {cells} | {total:,.1f} | {measured} |")
    return "\n".join(lines)


def measured_note(summary: dict, estimated: dict[str, float] | None) -> str:
    """What a short run measured, next to the estimate where the two count the same thing.

    On CUDA the peak is the allocator's maximum (comparable to the estimate's total); on CPU it is the process's
    peak resident memory, which also holds the Python/torch runtime, so only the optimizer state compares exactly.
    """
    kind = summary.get("peak_memory_kind", "peak memory")
    lines = [f"Measured over {summary.get('steps', '?')} steps: peak {summary['peak_memory_mb']:,.1f} MB ({kind})."]
    if isinstance(summary.get("memory_at_train_start_mb"), (int, float)):
        lines.append(f"At the start of training: {summary['memory_at_train_start_mb']:,.1f} MB.")
    if isinstance(summary.get("optimizer_state_mb"), (int, float)) and estimated:
        lines.append(
            f"Optimizer state: measured {summary['optimizer_state_mb']:,.2f} MB, "
            f"estimated {estimated['optimizer_state']:,.2f} MB."
        )
    return " ".join(lines)
