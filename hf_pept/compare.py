"""``hf-pept compare``: full-rank, LoRA, ReLoRA (warm start), GaLore and CoLA pre-trained with the same budget and seed.

Each method is one ``hf-pept train`` run in its own process (so each peak-memory figure is its own) and its own
run folder under ``--output_dir``; the table is read back from the folders' ``summary.json`` and ``metrics.jsonl``
only, like the app does. Writes ``comparison.csv`` and ``comparison.png`` (eval-perplexity curves with ReLoRA merge
and GaLore projector-refresh markers, memory bars; the plot needs matplotlib).

The default budget (``--budget 1``) pre-trains the ``20m`` LLaMA for :data:`BASE_STEPS` steps of 1,024 tokens per
method (the five default methods take about 10 minutes on 2 CPU cores); ``--budget k`` multiplies the steps, the restart and refresh
intervals and the warm start by k, so the methods keep their relative schedule.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import methods as method_table
from .metrics import METRICS_FILE
from .runner import SUMMARY_FILE

DEFAULT_METHODS = method_table.compare_methods()
BASE_STEPS = 200
CSV_FILE = "comparison.csv"
PLOT_FILE = "comparison.png"
COLUMNS = (
    ("method", "method", "{}"),
    ("trained_params", "trained params (M)", "{:.2f}"),
    ("optimizer_state_mb", "optimizer state (MB)", "{:.1f}"),
    ("peak_memory_mb", "peak memory (MB)", "{:.0f}"),
    ("tokens_per_second", "tokens/s", "{:.0f}"),
    ("eval_perplexity", "eval perplexity", "{:.2f}"),
    ("gap_to_full_pct", "gap to full-rank (%)", "{:+.1f}"),
    ("wall_time_s", "wall time (s)", "{:.0f}"),
)


@dataclass
class Budget:
    """The shared training budget, scaled by ``--budget``; every method gets the same data, steps and seed."""

    scale: float = 1.0
    model: str = "20m"
    vocab_size: int = 4096
    seq_len: int = 128
    batch_size: int = 8
    rank: int | None = None  # None = each method's default: a quarter of the model's width (64 at 20m)
    seed: int = 42
    max_eval_tokens: int = 16384
    max_train_tokens: int | None = None

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"--budget must be > 0, got {self.scale}")

    def steps(self, base: int) -> int:
        return max(1, int(round(base * self.scale)))

    @property
    def max_steps(self) -> int:
        return self.steps(BASE_STEPS)

    def common_argv(self) -> list[str]:
        max_steps = self.max_steps
        return [
            "--model", self.model, "--vocab_size", str(self.vocab_size), "--seq_len", str(self.seq_len),
            "--batch_size", str(self.batch_size), "--max_steps", str(max_steps), "--seed", str(self.seed),
            "--eval_steps", str(max(1, max_steps // 5)),
            "--logging_steps", str(max(1, max_steps // 40)), "--save_steps", "0", "--save_total_limit", "1",
            "--max_eval_tokens", str(self.max_eval_tokens), "--lora_dropout", "0.0",
            *([] if self.rank is None else ["--rank", str(self.rank)]),
        ]  # fmt: skip

    def data_argv(self) -> list[str]:
        return [] if self.max_train_tokens is None else ["--max_train_tokens", str(self.max_train_tokens)]

    def method_argv(self, method: str) -> list[str]:
        """The method's periodic knobs (the method table's ``compare_knobs``) scaled to the budget: ReLoRA
        warm-starts for the first quarter, then merges every quarter; GaLore refreshes its projectors every quarter."""
        knobs = method_table.get(method).compare_knobs
        return knobs(max(2, self.max_steps // 4)) if knobs else []

    def argv(self, method: str, output_dir: Path, device: str) -> list[str]:
        return [
            "train", "--method", method, *self.common_argv(), *self.data_argv(), *self.method_argv(method),
            "--device", device, "--output_dir", str(output_dir),
        ]  # fmt: skip


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from hf_pept.cli import main; sys.exit(main())"]


def run_train(argv: list[str]) -> int:
    """``hf-pept <argv>`` in a fresh process (its peak memory is its own); the exit status."""
    return subprocess.run([*_cli(), *argv], env={**os.environ}).returncode


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    records = []
    for line in (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return summary, records


def table_rows(summaries: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method; ``gap_to_full_pct`` = 100·(ppl − ppl_full)/ppl_full when full-rank ran."""
    full = summaries.get("full", {}).get("eval_perplexity")
    rows = []
    for method, summary in summaries.items():
        row = {key: summary.get(key) for key, _, _ in COLUMNS}
        row["method"] = method
        row["trained_params"] = summary["trained_params"] / 1e6
        ppl = summary.get("eval_perplexity")
        row["gap_to_full_pct"] = 100.0 * (ppl - full) / full if full and ppl is not None else None
        row["run_dir"] = summary.get("run_dir")
        rows.append(row)
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = [title for _, title, _ in COLUMNS]
    body = []
    for row in rows:
        cells = []
        for key, _, fmt in COLUMNS:
            value = row.get(key)
            cells.append(
                "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)
            )
        body.append(cells)
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [
        " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) for cells in body
    ]
    return "\n".join(lines)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = [key for key, _, _ in COLUMNS] + ["run_dir"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) for key in keys})


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
    marker_styles = {"relora_merge": ("v", "ReLoRA merge"), "projector_update": ("|", "GaLore projector refresh")}
    for method, (_, records) in runs.items():
        points = [(r["step"], r["eval_perplexity"]) for r in records if "eval_perplexity" in r]
        if not points:
            continue
        steps, ppl = zip(*points)
        (line,) = curves.plot(steps, ppl, marker="o", markersize=3, label=method)
        for event, (marker, label) in marker_styles.items():
            event_steps = sorted({r["step"] for r in records if r.get("event") == event})
            if event_steps:
                y = [min(ppl)] * len(event_steps)
                curves.scatter(event_steps, y, marker=marker, color=line.get_color(), s=60, label=f"{method}: {label}")
    curves.set_xlabel("optimizer step")
    curves.set_ylabel("held-out perplexity")
    curves.set_yscale("log")
    curves.set_title("eval perplexity (markers: merges / projector refreshes)", fontsize=10)
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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hf-pept compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=1.0, help="Multiplier of the default budget (steps).")
    parser.add_argument("--model", default=Budget.model, help="Model size or local path (default: %(default)s).")
    parser.add_argument(
        "--rank", type=int, default=Budget.rank, help="Rank of every low-rank method (default: hidden size / 4)."
    )
    parser.add_argument("--seq_len", type=int, default=Budget.seq_len, help="Tokens per sequence.")
    parser.add_argument("--batch_size", type=int, default=Budget.batch_size, help="Sequences per step.")
    parser.add_argument("--vocab_size", type=int, default=Budget.vocab_size, help="BPE vocabulary size.")
    parser.add_argument("--seed", type=int, default=Budget.seed, help="Seed shared by every method.")
    parser.add_argument(
        "--max_eval_tokens", type=int, default=Budget.max_eval_tokens, help="Held-out tokens per evaluation."
    )
    parser.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help=f"Comma-separated methods, full-rank first (choices: {', '.join(method_table.METHODS)}).",
    )
    parser.add_argument(
        "--max_train_tokens", type=int, default=None, help="Train on the first N tokens only (default: all)."
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument("--output_dir", default="runs/compare", help="Folder of the runs, CSV and plot.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in method_table.METHODS]
    if unknown or not methods:
        raise ValueError(
            f"--methods {args.methods!r} has unknown method(s) {unknown}; choose from {list(method_table.METHODS)}"
        )
    budget = Budget(
        args.budget,
        args.model,
        args.vocab_size,
        args.seq_len,
        args.batch_size,
        args.rank,
        args.seed,
        args.max_eval_tokens,
    )
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print(
        f"hf-pept compare: {', '.join(methods)} on the {budget.model} model, {budget.max_steps} steps of "
        f"{budget.batch_size * budget.seq_len:,} tokens each, rank {budget.rank or 'hidden/4'}, seed {budget.seed}; "
        f"runs in {out}",
        flush=True,
    )
    started = time.perf_counter()
    # Tokenizer and token cache first, so no run pays for them or carries their memory in its peak.
    from . import data

    data.build_datasets(
        data.get_tokenizer(budget.vocab_size),
        budget.seq_len,
        max_train_tokens=budget.max_train_tokens,
        max_eval_tokens=budget.max_eval_tokens,
    )
    runs: dict[str, tuple[dict, list[dict]]] = {}
    for index, method in enumerate(methods, start=1):
        run_dir = out / method
        print(f"[{index}/{len(methods)}] {method}", flush=True)
        returncode = run_train(budget.argv(method, run_dir, args.device))
        if returncode != 0:
            print(f"  {method} failed (exit {returncode}); see {run_dir / 'stdout.log'}", file=sys.stderr)
            continue
        summary, records = read_run(run_dir)
        summary["run_dir"] = str(run_dir)
        runs[method] = (summary, records)
    if not runs:
        print("hf-pept compare: every run failed", file=sys.stderr)
        return 1
    rows = table_rows({method: summary for method, (summary, _) in runs.items()})
    hardware = next(iter(runs.values()))[0].get("hardware", "")
    table = format_table(rows)
    print(f"\n{table}\n\n{hardware}; total {time.perf_counter() - started:.0f} s")
    (out / "comparison.txt").write_text(f"{table}\n\n{hardware}\n", encoding="utf-8")
    write_csv(rows, out / CSV_FILE)
    rank = budget.rank or next((s.get("rank") for s, _ in runs.values() if s.get("rank")), "hidden/4")
    title = f"{budget.model}, {budget.max_steps} steps × {budget.batch_size * budget.seq_len} tokens, rank {rank} | {hardware}"
    if plot(runs, rows, out / PLOT_FILE, title):
        print(f"wrote {out / CSV_FILE} and {out / PLOT_FILE}")
    else:
        print(f"wrote {out / CSV_FILE}; no plot: matplotlib is not installed (pip install 'hf-pept[plot]')")
    return 0 if len(runs) == len(methods) else 1
