"""The table of ``hf-pept compare``: one row per method over its seeds, the notes that keep it from misleading.

A row is read back from the runs' ``summary.json`` files only. Perplexity is the mean over seeds with the sample
standard deviation beside it; the gap to full-rank is 100·(ppl − ppl_full)/ppl_full ("—" for full-rank itself);
the 1B column is :func:`hf_pept.memory.estimate` for the paper's 1B LLaMA (32k vocabulary, batch 8 × 256,
fp32 weights), so a laptop-sized run still shows what each method saves at scale.
"""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path
from typing import Any

# (key, title, format); "—" where a value does not apply, "n/a" where it is missing
COLUMNS = (
    ("method", "method", "{}"),
    ("lr", "lr", "{:.0e}"),
    ("rank", "rank", "{}"),
    ("seeds", "seeds", "{}"),
    ("eval_perplexity", "eval ppl", "{:.2f}"),
    ("eval_perplexity_sd", "± sd", "{:.2f}"),
    ("gap_to_full_pct", "gap to full (%)", "{:+.1f}"),
    ("trained_params", "trained (M)", "{:.2f}"),
    ("optimizer_state_mb", "opt. state (MB)", "{:.2f}"),
    ("peak_memory_mb", "peak mem (MB)", "{:.0f}"),
    ("estimate_1b_gb", "1B est. (GB)", "{:.1f}"),
    ("tokens_per_second", "tokens/s", "{:.0f}"),
)
CSV_KEYS = (
    *[key for key, _, _ in COLUMNS],
    "optimizer_state_final_mb",
    "eval_perplexity_per_seed",
    "learning_rate_source",
    "run_dirs",
)


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.fmean(finite) if finite else None


def estimate_1b_gb(method: str, rank: int | None = None) -> float | None:
    """Weights + gradients + optimizer state + activations of the paper's 1B LLaMA under ``method`` (GB), at
    ``rank`` (None: the method's default, hidden/4 = 512)."""
    from .memory import estimate

    try:
        return estimate(method, model="1b", rank=rank).total / 1e9
    except ValueError:
        return None


def method_row(
    method: str,
    summaries: list[dict[str, Any]],
    lr: float,
    lr_source: str,
    label: str | None = None,
    rank_1b: int | None = None,
) -> dict[str, Any]:
    """One method's row over its seeds' summaries (``label``: its name in the table, default the method's;
    ``rank_1b``: the rank of its 1B estimate, default the method's)."""
    ppl = [s.get("eval_perplexity") for s in summaries]
    finite = [p for p in ppl if isinstance(p, (int, float)) and math.isfinite(p)]
    first = summaries[0]
    return {
        "method": label or method,
        "lr": lr,
        "learning_rate_source": lr_source,
        "rank": first.get("rank") if first.get("rank") is not None else "—",
        "seeds": ",".join(str(s.get("seed", "?")) for s in summaries),
        "eval_perplexity": _mean(finite),
        "eval_perplexity_sd": statistics.stdev(finite) if len(finite) > 1 else None,
        "eval_perplexity_per_seed": ";".join(f"{p:.4f}" for p in finite),
        "trained_params": first["trained_params"] / 1e6,
        "optimizer_state_mb": _mean([s.get("optimizer_state_mb") for s in summaries]),
        "optimizer_state_final_mb": _mean([s.get("optimizer_state_final_mb") for s in summaries]),
        "peak_memory_mb": _mean([s.get("peak_memory_mb") for s in summaries]),
        "tokens_per_second": _mean([s.get("tokens_per_second") for s in summaries]),
        "estimate_1b_gb": estimate_1b_gb(method, rank_1b),
        "run_dirs": ";".join(str(s.get("run_dir", "")) for s in summaries),
    }


def add_gaps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``gap_to_full_pct`` against the full-rank row ("—" on that row; None when full-rank did not run)."""
    full = next((r["eval_perplexity"] for r in rows if r["method"] == "full"), None)
    for row in rows:
        ppl = row["eval_perplexity"]
        if row["method"] == "full":
            row["gap_to_full_pct"] = "—"
        else:
            row["gap_to_full_pct"] = 100.0 * (ppl - full) / full if full and ppl is not None else None
    return rows


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, str):
        return value
    return fmt.format(value)


def _state_cell(row: dict[str, Any]) -> str:
    """Optimizer state; "first → last" where the two differ by more than 1 % (ReLoRA: warm start → low-rank)."""
    peak, final = row.get("optimizer_state_mb"), row.get("optimizer_state_final_mb")
    if isinstance(peak, float) and isinstance(final, float) and abs(peak - final) > 0.01 * peak:
        return f"{peak:.2f} → {final:.2f}"
    return _cell(peak, "{:.2f}")


def format_table(rows: list[dict[str, Any]]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = [[_state_cell(row) if key == "optimizer_state_mb" else _cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
            for row in rows]  # fmt: skip
    for cells in body:  # no spread with one seed
        cells[5] = cells[5] if cells[5] != "n/a" else ""
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [
        " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) for cells in body
    ]
    return "\n".join(lines)


def notes(
    rows: list[dict[str, Any]],
    peak_memory_kind: str | None,
    model_line: str,
    rank: int | None = None,
    unigram_perplexity: float | None = None,
):
    """The lines printed under the table: what each column that could mislead measures (``rank``: the one given
    with ``--rank``, None = each method's default; ``unigram_perplexity``: the held-out perplexity of token
    frequencies alone, the floor a trained model must clear)."""
    out = [model_line]
    if unigram_perplexity is not None and math.isfinite(unigram_perplexity):
        out.append(
            f"eval ppl: on held-out files; a unigram model (token frequencies only) scores {unigram_perplexity:.1f} "
            "there, so a model near that number has learned little beyond them"
        )
    sources = {r["method"]: r.get("learning_rate_source", "") for r in rows}
    untuned = [m for m, source in sources.items() if source == "method default"]
    given = [m for m, source in sources.items() if source == "given"]
    if given:
        out.append(f"lr given with --learning_rates: {', '.join(given)}")
    if untuned and len(untuned) == len(sources):
        out.append(
            "lr: every method at its method-table default (its paper's rate): no sweep is committed for this budget, "
            "so the ordering largely follows the learning rates (hf-pept compare --sweep tunes them)"
        )
    elif len(given) < len(sources):
        out.append(
            "lr: each method at its own best rate of the committed sweep for this budget (hf-pept compare --sweep)"
            + (f"; not swept, the method's default: {', '.join(untuned)}" if untuned else "")
        )
    out.append("tokens/s: wall-clock throughput of each run, as loaded as the machine was at the time")
    ranks = (
        f"{rank} for every low-rank method (--rank)"
        if rank
        else "hidden/4 for every low-rank method (the papers' ratio)"
    )
    out.append(f"rank: {ranks}; eval ppl: mean over seeds, ± sample sd")
    out.append(
        "opt. state: bytes of every tensor in the optimizer's state after training, exact; "
        + (
            "peak mem: the process's peak RSS on CPU (Python, torch and the data included; not comparable to GPU "
            "memory)"
            if peak_memory_kind != "cuda"
            else "peak mem: CUDA's peak allocated bytes"
        )
    )
    out.append(
        "1B est.: hf_pept.memory.estimate for the paper's 1B LLaMA (32k vocabulary, batch 8 × 256, fp32 weights and "
        "state, activations included) under each method: what the method saves at scale"
    )
    if any(r["method"] == "relora" for r in rows):
        out.append(
            "relora: opt. state is warm start → low-rank phase (the warm start trains the full weights and the "
            "factors); trained (M) is the low-rank phase's"
        )
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(CSV_KEYS))
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) for key in CSV_KEYS})


__all__ = ["COLUMNS", "add_gaps", "format_table", "method_row", "notes", "write_csv"]
