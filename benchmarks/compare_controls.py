"""Controlled runs behind ``hf-pept compare``'s default table: does a low-rank lead over full-rank come from the
method, or from the learning rate of the embeddings and head?

At the default budget the methods stable at a high rate (their best rate in the committed sweep above full-rank's)
also train the unprojected embeddings and head at that rate, while full-rank's one rate is capped by its matrices.
Each control changes only that:

* ``full`` — full-rank at its own best rate (the baseline, as in the table);
* ``full, embeddings at <high>`` — full-rank, its transformer body at its own best rate, the embeddings and head at
  the high-rate methods' rate (``--embedding_learning_rate``): if the lead was the embeddings', this closes it;
* ``<tuner>, embeddings at <full's>`` — each high-rate tuner (trained by the Trainer's AdamW) at its own best
  rate with its embeddings and head held to full-rank's: if the lead was the embeddings', this removes it.
  (The GaLore family forms its own parameter groups and does not take the option.)

Same budget, data and seeds as ``hf-pept compare``; the rates come from the committed sweep
(``hf_pept/compare_defaults.json``). Writes ``controls.csv`` and ``controls.md`` into ``--output_dir``::

    python benchmarks/compare_controls.py --seeds 2 --jobs 2 --output_dir benchmarks/results/compare_controls_cpu
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

from hf_pept import compare


def controls(rates: dict[str, float]) -> list[tuple[str, str, float, float | None]]:
    """``(label, method, lr, embedding_lr)`` of every control the committed rates call for."""
    full = rates["full"]
    high = {m: lr for m, lr in rates.items() if lr > full}
    out = [("full", "full", full, None)]
    for lr in sorted(set(high.values())):
        out.append((f"full, embeddings at {lr:g}", "full", full, lr))
    # trained by the Trainer's AdamW; CoLA-M is CoLA's model and numbers with recomputation, so CoLA stands for it
    tuners = [m for m in high if compare.method_table.get(m).optim_name is None and m != "cola-m"]
    for method in tuners:
        out.append((f"{method}", method, high[method], None))
        out.append((f"{method}, embeddings at {full:g}", method, high[method], full))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=1, help="Runs at once (each with a share of the CPU threads).")
    parser.add_argument("--output_dir", default="runs/compare_controls")
    args = parser.parse_args(argv)
    budget = compare.Budget(seeds=args.seeds)
    rates = compare.committed_learning_rates(budget)
    if not rates:
        print(f"no committed sweep for the default budget in {compare.DEFAULTS_FILE}", file=sys.stderr)
        return 1
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    plan = controls(rates)
    tasks, labels = [], []
    for index, (label, method, lr, embedding_lr) in enumerate(plan):
        extra = () if embedding_lr is None else ("--embedding_learning_rate", f"{embedding_lr:g}")
        for seed in budget.seed_list:
            run_dir = out / f"{index}-{method}-seed{seed}"
            tasks.append(compare.Task(compare.Entry(method), run_dir, seed, lr, f"{label} ({run_dir.name})", extra))
            labels.append(label)
    started = time.perf_counter()
    runs = compare.run_tasks(budget, tasks, "cpu", args.jobs)
    by_label: dict[str, list[float]] = {}
    for label, run in zip(labels, runs):
        if run is not None:
            by_label.setdefault(label, []).append(run[0]["eval_perplexity"])
    full = statistics.fmean(by_label["full"])
    rows = []
    for label, method, lr, embedding_lr in plan:
        ppl = by_label.get(label, [])
        mean = statistics.fmean(ppl) if ppl else float("nan")
        sd = statistics.stdev(ppl) if len(ppl) > 1 else float("nan")
        rows.append([label, method, lr, embedding_lr or lr, len(ppl), mean, sd, 100 * (mean - full) / full])
    header = ["control", "method", "lr", "embedding lr", "seeds", "eval ppl", "± sd", "gap to full (%)"]
    with open(out / "controls.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    summaries = [run[0] for run in runs if run is not None]
    hardware = summaries[0].get("hardware", "") if summaries else ""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append(f"| {r[0]} | {r[1]} | {r[2]:g} | {r[3]:g} | {r[4]} | {r[5]:.2f} | {r[6]:.2f} | {r[7]:+.1f} |")
    lines += ["", f"{compare.model_line(budget, summaries)}; {hardware}; --jobs {args.jobs}; "]
    lines[-1] += f"{time.perf_counter() - started:.0f} s"
    (out / "controls.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
