"""The figure of ``hf-pept compare``: eval-perplexity curves with the methods' events, and memory bars."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# event -> (marker, legend label): the periodic work of each method, drawn on its curve
MARKER_STYLES = {
    "relora_merge": ("v", "ReLoRA merge"),
    "projector_update": ("|", "GaLore projector refresh"),
    "switchlora_switch": ("+", "SwitchLoRA switches"),
    "sst_resample": ("^", "SST resample"),
    "sst_resvd": ("x", "SST re-SVD"),
}


def plot(runs: dict[str, tuple[dict, list[dict]]], rows: list[dict[str, Any]], path: Path, title: str) -> bool:
    """Eval perplexity per step (merge / refresh markers) and memory bars; False when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (curves, bars, state_bars) = plt.subplots(
        1, 3, figsize=(15, 4.5), constrained_layout=True, gridspec_kw={"width_ratios": [2, 1, 1]}
    )
    for method, (_, records) in runs.items():
        points = [(r["step"], r["eval_perplexity"]) for r in records if "eval_perplexity" in r]
        if not points:
            continue
        steps, ppl = zip(*points)
        (line,) = curves.plot(steps, ppl, marker="o", markersize=3, label=method)
        for event, (marker, label) in MARKER_STYLES.items():
            event_steps = sorted({r["step"] for r in records if r.get("event") == event})
            if event_steps:
                y = [min(ppl)] * len(event_steps)
                curves.scatter(event_steps, y, marker=marker, color=line.get_color(), s=60, label=f"{method}: {label}")
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("held-out perplexity")
    curves.set_yscale("log")
    curves.set_title("eval perplexity, first seed (markers: each method's periodic events)", fontsize=10)
    curves.legend(fontsize=7)
    names = [row["method"] for row in rows]
    for axis, key, label in (
        (bars, "peak_memory_mb", "peak memory (MB)"),
        (state_bars, "optimizer_state_mb", "optimizer state (MB)"),
    ):
        values = [row.get(key) or 0 for row in rows]
        drawn = axis.bar(names, values, color=[f"C{i}" for i in range(len(names))])
        axis.bar_label(drawn, fmt="%.1f", fontsize=8)
        axis.set_title(label, fontsize=10)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


__all__ = ["MARKER_STYLES", "plot"]
