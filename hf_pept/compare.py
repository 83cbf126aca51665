"""``hf-pept compare``: every method of the method table pre-trained with the same budget, data and seeds, each at
its own tuned learning rate, and GaLore once more at the rank whose optimizer state matches LoRA's (the
memory-aligned point). ``--methods`` picks entries, each optionally at a rank of its own (``galore:rank=24``).

Each run is one ``hf-pept train`` in its own process (so each peak-memory figure is its own) and its own folder under
``--output_dir`` (``<method>`` for the first seed, ``<method>-seed<k>`` for the others; a folder of an earlier
comparison of that name is replaced); the table is read back from
the folders' ``summary.json`` and ``metrics.jsonl`` only, like the app does. Writes ``comparison.txt``,
``comparison.csv`` and ``comparison.png``.

The protocol: the papers tune the learning rate per method, so does this. ``hf-pept compare --sweep`` runs every
method over :data:`SWEEP_GRID` at one seed and writes ``lr_sweep.csv`` and ``lr_defaults.json`` (best rate per
method, the budget and the command); ``hf-pept compare`` reads :data:`DEFAULTS_FILE` when a sweep made for its
budget is committed there, so ``make demo`` need not sweep. A method without a committed rate runs at its
method-table default (the papers' rate), and the notes under the table say so. ``--budget k`` multiplies the steps
and the methods' periodic intervals by k (a committed sweep applies only to the budget it was made for).
``--jobs N`` runs N processes at once, each on a share of the cores (tokens/s then measures a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import methods as method_table
from .compare_plot import plot
from .compare_table import add_gaps, format_table, method_row, notes, write_csv
from .metrics import METRICS_FILE
from .runner import SUMMARY_FILE

DEFAULT_METHODS = method_table.compare_methods()
BASE_STEPS = 400
CSV_FILE = "comparison.csv"
PLOT_FILE = "comparison.png"
SWEEP_FILE = "lr_sweep.csv"
SWEEP_DEFAULTS = "lr_defaults.json"
SWEEP_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
DEFAULTS_FILE = Path(__file__).with_name("compare_defaults.json")


@dataclass
class Budget:
    """The shared training budget, scaled by ``--budget``; every method gets the same data, steps and seeds.

    The default (the ``tiny`` LLaMA at a 512-token vocabulary, 400 steps of 8 × 128 tokens) keeps every method of
    the table within ``make demo``'s 10 minutes on 2 CPU cores and trains full-rank well past a unigram model
    (perplexity about 40 against a unigram model's 200, the notes print both). The small vocabulary is chosen so
    that the transformer body, which the methods act on, holds most of the parameters (61 %; at 2,048 tokens the
    embeddings and head held 72 %); its perplexities are per 512-token-vocabulary token, not comparable with the
    papers' (32k vocabulary, C4).
    """

    scale: float = 1.0
    model: str = "tiny"
    vocab_size: int = 512
    seq_len: int = 128
    batch_size: int = 8
    rank: int | None = None  # None = each method's default: a quarter of the model's width
    seed: int = 42
    seeds: int = 1
    max_eval_tokens: int = 16384
    max_train_tokens: int | None = None

    def __post_init__(self):
        if not self.scale > 0:
            raise ValueError(f"--budget must be > 0, got {self.scale}")
        if isinstance(self.seeds, bool) or not isinstance(self.seeds, int) or self.seeds < 1:
            raise ValueError(f"--seeds must be an integer >= 1, got {self.seeds!r}")

    def steps(self, base: int) -> int:
        return max(1, int(round(base * self.scale)))

    @property
    def max_steps(self) -> int:
        return self.steps(BASE_STEPS)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]

    def key(self) -> dict[str, Any]:
        """What a committed sweep must match to apply (everything but the seeds' count and the eval size)."""
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "max_eval_tokens")}

    def common_argv(self, seed: int, rank: int | None = None) -> list[str]:
        """The options every run of the budget shares (``rank``: an entry's own, else the budget's)."""
        max_steps = self.max_steps
        rank = self.rank if rank is None else rank
        return [
            "--model", self.model, "--vocab_size", str(self.vocab_size), "--seq_len", str(self.seq_len),
            "--batch_size", str(self.batch_size), "--max_steps", str(max_steps), "--seed", str(seed),
            "--eval_steps", str(max(1, max_steps // 5)),
            "--logging_steps", str(max(1, max_steps // 40)), "--save_steps", "0", "--save_total_limit", "1",
            "--max_eval_tokens", str(self.max_eval_tokens), "--lora_dropout", "0.0",
            *([] if rank is None else ["--rank", str(rank)]),
            *([] if self.max_train_tokens is None else ["--max_train_tokens", str(self.max_train_tokens)]),
        ]  # fmt: skip

    def method_argv(self, method: str) -> list[str]:
        """The method's periodic knobs (the method table's ``compare_knobs``) scaled to the budget: ReLoRA
        warm-starts for the first quarter, then merges every quarter; GaLore refreshes its projectors every quarter."""
        knobs = method_table.get(method).compare_knobs
        return knobs(max(2, self.max_steps // 4)) if knobs else []

    def argv(
        self, method: str, output_dir: Path, device: str, seed: int | None = None, lr: float | None = None,
        rank: int | None = None,
    ):  # fmt: skip
        """The ``hf-pept train`` command of one run (``rank``: the entry's own rank, else the budget's)."""
        seed = self.seed if seed is None else seed
        lr_argv = [] if lr is None else ["--learning_rate", f"{lr:g}"]
        return [
            "train", "--method", method, *self.common_argv(seed, rank), *self.method_argv(method), *lr_argv,
            "--device", device, "--output_dir", str(output_dir),
        ]  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One row of a comparison: a method of the method table at the budget's rank, or at a rank of its own
    (``galore:rank=19`` on the command line: the memory-aligned point of :func:`state_matched_rank`)."""

    method: str
    rank: int | None = None

    @classmethod
    def parse(cls, text: str) -> Entry:
        method, sep, option = text.strip().partition(":")
        if method not in method_table.METHODS:
            raise ValueError(f"--methods entry {text!r}: {method!r} is not one of {list(method_table.METHODS)}")
        entry = method_table.get(method)
        if not sep:
            return cls(method)
        key, _, value = option.partition("=")
        if key != "rank" or not (value.isascii() and value.isdigit()) or int(value) < 1 or not entry.low_rank:
            raise ValueError(
                f"--methods entry {text!r}: expected <method> or <low-rank method>:rank=<positive integer>, "
                f"e.g. galore:rank=24"
            )
        return cls(method, int(value))

    @property
    def label(self) -> str:
        """Its name in the table and the CSV."""
        return self.method if self.rank is None else f"{self.method}:rank={self.rank}"

    @property
    def folder(self) -> str:
        """Its run folder's name (first seed)."""
        return self.method if self.rank is None else f"{self.method}-rank{self.rank}"


def state_matched_rank(budget: Budget, method: str = "galore", reference: str = "lora") -> int:
    """The largest rank at which ``method``'s optimizer state is at most ``reference``'s at the budget's rank, by
    :func:`hf_pept.memory.estimate` (whose optimizer-state bytes are exact for these layouts; the table prints the
    measured bytes beside it): the memory-aligned point, the same state budget spent on a higher rank."""
    from .memory import estimate

    shape = {"model": budget.model, "vocab_size": budget.vocab_size, "seq_len": budget.seq_len}
    target = estimate(reference, rank=budget.rank, batch_size=budget.batch_size, **shape).optimizer_state

    def fits(rank: int) -> bool:
        return estimate(method, rank=rank, batch_size=budget.batch_size, **shape).optimizer_state <= target

    low, high = 1, 4096  # the state grows with the rank: bisect for the last rank that fits
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low


def default_entries(budget: Budget) -> list[Entry]:
    """Every method the method table marks for comparison, and GaLore at the rank whose optimizer state matches
    LoRA's (when that rank is not the budget's own)."""
    entries = [Entry(method) for method in DEFAULT_METHODS]
    if {"galore", "lora"} <= set(DEFAULT_METHODS):
        try:
            matched = state_matched_rank(budget)
        except (ValueError, OSError) as error:  # a model the estimate cannot count: no aligned point
            print(f"hf-pept compare: no memory-aligned GaLore point ({error})", file=sys.stderr)
            return entry_order(entries)
        own = budget.rank if budget.rank is not None else _default_rank(budget, "galore")
        if matched != own:
            entries.append(Entry("galore", matched))
    return entry_order(entries)


def _default_rank(budget: Budget, method: str) -> int | None:
    from .models import hidden_size

    return method_table.get(method).default_rank(hidden_size(budget.model))


def entry_order(entries: list[Entry]) -> list[Entry]:
    """Full-rank first, then the method table's order, each method's own-rank points after it."""
    table = list(method_table.METHODS)
    return sorted(entries, key=lambda e: (e.method != "full", table.index(e.method), e.rank is not None, e.rank or 0))


def _cli() -> list[str]:
    return [sys.executable, "-c", "import sys; from hf_pept.cli import main; sys.exit(main())"]


def run_train(argv: list[str], threads: int | None = None) -> int:
    """``hf-pept <argv>`` in a fresh process (its peak memory is its own); the exit status. ``threads``: the
    process's CPU threads (``OMP_NUM_THREADS``) when several runs share the machine."""
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    return subprocess.run([*_cli(), *argv], env=env).returncode


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    summary = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    records = []
    for line in (run_dir / METRICS_FILE).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    summary["run_dir"] = str(run_dir)
    return summary, records


def committed_learning_rates(budget: Budget, path: Path | None = None) -> dict[str, float]:
    """The best rate per method of the committed sweep (:data:`DEFAULTS_FILE`), when it was made for this budget;
    else {}."""
    try:
        saved = json.loads((path or DEFAULTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return dict(saved.get("learning_rates", {})) if saved.get("budget") == budget.key() else {}


def learning_rate_plan(methods: list[str], budget: Budget, overrides: dict[str, float]) -> dict[str, tuple]:
    """``{method: (lr, source)}``: an explicit ``--learning_rates`` value, the committed sweep, or the default."""
    swept = committed_learning_rates(budget)
    plan = {}
    for method in methods:
        if method in overrides:
            plan[method] = (overrides[method], "given")
        elif method in swept:
            plan[method] = (swept[method], "sweep")
        else:
            plan[method] = (method_table.get(method).default_learning_rate(budget.model), "method default")
    return plan


def _parse_rates(text: str | None) -> dict[str, float]:
    rates: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        method, sep, value = item.partition("=")
        if not sep or method not in method_table.METHODS:
            raise ValueError(f"--learning_rates {text!r}: expected method=rate pairs of {list(method_table.METHODS)}")
        try:
            rates[method] = float(value)
        except ValueError:
            raise ValueError(f"--learning_rates {text!r}: {value!r} is not a number") from None
    return rates


@dataclass(frozen=True)
class Task:
    """One run of a comparison or sweep."""

    entry: Entry
    run_dir: Path
    seed: int
    lr: float
    title: str  # what the progress line says
    extra_argv: tuple[str, ...] = ()  # further ``hf-pept train`` options of this run alone


def run_tasks(budget: Budget, tasks: list[Task], device: str, jobs: int = 1) -> list[tuple | None]:
    """Every task's run (None where it failed), in order; ``jobs`` > 1 runs that many processes at once, each with
    an equal share of the CPU cores as its threads (on 2 cores small models train faster as two 1-thread runs than
    one after the other at 2 threads; tokens/s then measures a shared machine)."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--jobs must be an integer >= 1, got {jobs!r}")
    if jobs == 1:
        return [_run(budget, task, device) for task in tasks]
    from concurrent.futures import ThreadPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda task: _run(budget, task, device, threads), tasks))


def _run(budget: Budget, task: Task, device: str, threads: int | None = None) -> tuple | None:
    entry, run_dir, seed, lr = task.entry, task.run_dir, task.seed, task.lr
    print(task.title, flush=True)
    if run_dir.is_dir():  # the comparison's own folder of an earlier comparison: replaced, not mixed with it
        shutil.rmtree(run_dir)
    argv = [*budget.argv(entry.method, run_dir, device, seed=seed, lr=lr, rank=entry.rank), *task.extra_argv]
    returncode = run_train(argv) if threads is None else run_train(argv, threads=threads)
    if returncode != 0:
        print(f"  {entry.label} (seed {seed}, lr {lr:g}) failed (exit {returncode}); see {run_dir / 'stdout.log'}")
        return None
    return read_run(run_dir)


def sweep(
    budget: Budget,
    methods: list[str],
    out: Path,
    device: str,
    grid=SWEEP_GRID,
    command: str = "hf-pept compare --sweep",
    jobs: int = 1,
) -> dict[str, float]:
    """Every method at every rate of ``grid`` (first seed); writes ``lr_sweep.csv`` and ``lr_defaults.json``."""
    import csv

    tasks = [
        Task(Entry(m), out / "sweep" / f"{m}-lr{lr:g}", budget.seed, lr, f"[sweep {i}/{len(methods)}] {m} lr {lr:g}")
        for i, m in enumerate(methods, start=1)
        for lr in grid
    ]
    results: dict[str, dict[float, float]] = {}
    for task, run in zip(tasks, run_tasks(budget, tasks, device, jobs)):
        if run is not None and run[0].get("eval_perplexity") is not None:
            results.setdefault(task.entry.method, {})[task.lr] = run[0]["eval_perplexity"]
    with open(out / SWEEP_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "lr", "eval_perplexity", "best"])
        best = {}
        for method, by_lr in results.items():
            best[method] = min(by_lr, key=lambda lr: by_lr[lr])
            for lr, ppl in by_lr.items():
                writer.writerow([method, lr, ppl, lr == best[method]])
    payload = {"budget": budget.key(), "grid": list(grid), "learning_rates": best, "command": command}
    payload["date"] = time.strftime("%Y-%m-%d")
    (out / SWEEP_DEFAULTS).write_text(json.dumps(payload, indent=1), encoding="utf-8")
    for method in methods:
        by_lr = results.get(method, {})
        cells = "  ".join(f"{lr:g}: {ppl:.2f}" for lr, ppl in by_lr.items())
        print(f"{method:<18} {cells}  -> best {best.get(method, 'n/a')}")
    print(f"wrote {out / SWEEP_FILE} and {out / SWEEP_DEFAULTS} (copy it to {DEFAULTS_FILE} to make it the default)")
    return best


def model_line(budget: Budget, summaries: list[dict[str, Any]]) -> str:
    total = next((s.get("total_params") for s in summaries if s.get("total_params")), None)
    size = f"{total / 1e6:.2f}M-parameter" if total else ""
    from .models import MODEL_SIZES

    shape = MODEL_SIZES.get(budget.model)
    body = ""
    if shape and total:
        embeddings = 2 * budget.vocab_size * shape.hidden_size  # untied input and output embeddings
        body = f", {100 * embeddings / total:.0f} % of them in the embeddings and head"
    tokens = budget.batch_size * budget.seq_len
    return (
        f"model: {budget.model!r}, a {size} LLaMA{body}; {budget.max_steps} steps × {tokens:,} tokens, "
        f"vocabulary {budget.vocab_size}, seeds {budget.seed_list}"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="hf-pept compare", description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--budget", type=float, default=1.0, help="Multiplier of the default budget (steps).")
    parser.add_argument("--model", default=Budget.model, help="Model size or local path (default: %(default)s).")
    parser.add_argument(
        "--rank", type=int, default=Budget.rank, help="Rank of every low-rank method (default: hidden size / 4)."
    )
    parser.add_argument("--seq_len", type=int, default=Budget.seq_len, help="Tokens per sequence.")
    parser.add_argument("--batch_size", type=int, default=Budget.batch_size, help="Sequences per step.")
    parser.add_argument("--vocab_size", type=int, default=Budget.vocab_size, help="BPE vocabulary size.")
    parser.add_argument("--seed", type=int, default=Budget.seed, help="First seed; --seeds N runs seed .. seed+N-1.")
    parser.add_argument("--seeds", type=int, default=Budget.seeds, help="Seeds per method (mean and sd reported).")
    parser.add_argument(
        "--max_eval_tokens", type=int, default=Budget.max_eval_tokens, help="Held-out tokens per evaluation."
    )
    parser.add_argument(
        "--methods",
        default=None,
        help="Comma-separated methods, each optionally at its own rank (galore:rank=24); default: every method of "
        f"the method table ({', '.join(DEFAULT_METHODS)}) and GaLore at the rank whose optimizer state matches "
        "LoRA's.",
    )
    parser.add_argument(
        "--learning_rates", default=None, help="method=rate pairs overriding the committed sweep, e.g. full=3e-3."
    )
    parser.add_argument(
        "--sweep", action="store_true", help=f"Sweep each method over {list(SWEEP_GRID)} instead (one seed)."
    )
    parser.add_argument(
        "--max_train_tokens", type=int, default=None, help="Train on the first N tokens only (default: all)."
    )
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="Where to train.")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="Runs at once, each with an equal share of the CPU threads (default 1: tokens/s of an unshared machine).",
    )
    parser.add_argument("--output_dir", default="runs/compare", help="Folder of the runs, CSV and plot.")
    return parser.parse_args(argv)


def parse_entries(text: str | None, budget: Budget) -> list[Entry]:
    """``--methods``: None = :func:`default_entries`; else comma-separated ``method`` / ``method:rank=K``."""
    if text is None:
        return default_entries(budget)
    entries = [Entry.parse(item) for item in text.split(",") if item.strip()]
    if not entries:
        raise ValueError(f"--methods {text!r} names no method; choose from {list(method_table.METHODS)}")
    return entry_order(list(dict.fromkeys(entries)))


def unigram_perplexity(train_ds, eval_ds, vocab_size: int, max_tokens: int = 2_000_000) -> float:
    """Perplexity on the held-out blocks of a unigram model of the training tokens (add-one smoothed counts): what
    a model that learned nothing but token frequencies scores, scored on the same tokens as the language models
    (every position of a block but its first)."""
    import math

    import torch

    counts = torch.ones(vocab_size, dtype=torch.float64)
    seen = 0
    for item in train_ds:
        ids = torch.as_tensor(item["input_ids"])
        counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size].double()
        seen += ids.numel()
        if seen >= max_tokens:
            break
    log_p = (counts / counts.sum()).log()
    total, n = 0.0, 0
    for item in eval_ds:
        ids = torch.as_tensor(item["input_ids"])[1:]
        total -= float(log_p[ids].sum())
        n += ids.numel()
    return math.exp(total / n) if n else float("nan")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs < 1:
        raise ValueError(f"--jobs must be an integer >= 1, got {args.jobs}")
    overrides = _parse_rates(args.learning_rates)
    budget = Budget(
        args.budget, args.model, args.vocab_size, args.seq_len, args.batch_size, args.rank, args.seed, args.seeds,
        args.max_eval_tokens, args.max_train_tokens,
    )  # fmt: skip
    entries = parse_entries(args.methods, budget)
    methods = list(dict.fromkeys(e.method for e in entries))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Tokenizer and token cache first, so no run pays for them or carries their memory in its peak.
    from . import data

    train_ds, eval_ds = data.build_datasets(
        data.get_tokenizer(budget.vocab_size),
        budget.seq_len,
        max_train_tokens=budget.max_train_tokens,
        max_eval_tokens=budget.max_eval_tokens,
    )
    if args.sweep:
        given = list(sys.argv[1:] if argv is None else argv)
        given = [a for a in given[given[:1] == ["compare"] :] if a != "--sweep"]  # the command, not a value
        command = " ".join(["hf-pept compare --sweep", *given])
        sweep(budget, methods, out, args.device, command=command, jobs=args.jobs)
        return 0
    plan = learning_rate_plan(methods, budget, overrides)
    print(
        f"hf-pept compare: {', '.join(e.label for e in entries)} on the {budget.model} model, {budget.max_steps} "
        f"steps of {budget.batch_size * budget.seq_len:,} tokens, seeds {budget.seed_list}; runs in {out}",
        flush=True,
    )
    tasks = []
    for index, entry in enumerate(entries, start=1):
        lr, source = plan[entry.method]
        for k, seed in enumerate(budget.seed_list):
            folder = out / (entry.folder if k == 0 else f"{entry.folder}-seed{seed}")
            title = f"[{index}/{len(entries)}] {entry.label} (lr {lr:g}, {source}; seed {seed})"
            tasks.append(Task(entry, folder, seed, lr, title))
    runs: dict[Entry, list[tuple[dict, list[dict]]]] = {}
    for task, run in zip(tasks, run_tasks(budget, tasks, args.device, args.jobs)):
        if run is not None:
            runs.setdefault(task.entry, []).append(run)
    if not runs:
        print("hf-pept compare: every run failed", file=sys.stderr)
        return 1
    rows = add_gaps(
        [
            method_row(e.method, [s for s, _ in r], *plan[e.method], label=e.label, rank_1b=_rank_at_1b(budget, e))
            for e, r in runs.items()
        ]
    )
    summaries = [s for r in runs.values() for s, _ in r]
    hardware = summaries[0].get("hardware", "")
    table = format_table(rows)
    peak_kind = summaries[0].get("peak_memory_kind")
    reference = unigram_perplexity(train_ds, eval_ds, budget.vocab_size)
    lines = notes(rows, peak_kind, model_line(budget, summaries), rank=budget.rank, unigram_perplexity=reference)
    if args.jobs > 1:
        lines.append(f"tokens/s and peak mem: {args.jobs} runs at a time (--jobs), each on a share of the cores")
    aligned = [e for e in default_entries(budget) if e.rank is not None] if any(e.rank for e in runs) else []
    lines += [f"{e.label}: {_own_rank_note(budget, e, e in aligned)}" for e in runs if e.rank is not None]
    text = "\n".join([table, "", *lines])
    text += f"\n\n{hardware}; total {time.perf_counter() - started:.0f} s"
    print(f"\n{text}")
    (out / "comparison.txt").write_text(text + "\n", encoding="utf-8")
    write_csv(rows, out / CSV_FILE)
    title = f"{model_line(budget, summaries)} | {hardware}"
    if plot({e.label: r[0] for e, r in runs.items()}, rows, out / PLOT_FILE, title):
        print(f"wrote {out / CSV_FILE} and {out / PLOT_FILE}")
    else:
        print(f"wrote {out / CSV_FILE}; no plot: matplotlib is not installed (pip install 'hf-pept[plot]')")
    return 0 if all(len(runs.get(e, [])) == budget.seeds for e in entries) else 1


def _rank_at_1b(budget: Budget, entry: Entry) -> int | None:
    """An own-rank entry's rank scaled to the 1B model's width (its ratio to the hidden size kept); else None."""
    if entry.rank is None:
        return None
    from .models import MODEL_SIZES, hidden_size

    return max(1, round(entry.rank * MODEL_SIZES["1b"].hidden_size / hidden_size(budget.model)))


def _own_rank_note(budget: Budget, entry: Entry, memory_aligned: bool) -> str:
    if memory_aligned:
        return (
            f"the memory-aligned point: the largest rank whose optimizer state (hf_pept.memory.estimate) is at most "
            f"LoRA's at the budget's rank; its 1B estimate at rank {_rank_at_1b(budget, entry)}, the same ratio"
        )
    return (
        f"rank {entry.rank} given with --methods; its 1B estimate at rank {_rank_at_1b(budget, entry)}, the same ratio"
    )
