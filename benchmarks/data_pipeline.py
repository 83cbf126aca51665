"""Tokens/s of the data pipeline on the built-in corpus: tokenization + packing of the training split.

Rows (one run each, same tokenizer, same corpus, ``seq_len`` 256):

* ``old``: the hand-written pipeline this project had before ``datasets`` (``tokenize_documents`` +
  ``TokenBlockDataset`` and its ``.npy`` cache), loaded from git (``--old_ref``, default the commit before
  the switch) into a temporary module, so it is measured as it was, not re-implemented here;
* ``datasets``: :func:`hf_pept.data.build_datasets` (``Dataset.map`` tokenize + pack) with ``num_proc`` 1 and 2;
* ``stream``: the streamed training split, one pass, as ``stream_blocks`` (tokenize + pack on the fly) and as the
  ``TokenBlockStream`` a run reads (plus the shuffle buffer and its resumable state).

``first`` is a run into an empty cache, ``cached`` the same call again (a stream has no cache). The tokenizer (BPE,
8192 tokens) is trained once before timing. Both pipelines call ``tokenizers``' ``encode_batch``, which uses its
own threads unless ``TOKENIZERS_PARALLELISM=false`` (in ``num_proc`` > 1 worker processes it runs single-threaded). Writes ``benchmarks/results/data_pipeline/data_pipeline_<device>.csv``
with the environment lines on top, and prints the table.

    python benchmarks/data_pipeline.py
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench_utils import environment, write_csv  # noqa: E402

SEQ_LEN = 256
OLD_REF = "c5759a6"  # the last commit with the hand-written pipeline


def _old_module(ref: str, folder: Path):
    """The old ``hf_pept/data.py`` at ``ref``, imported from a temporary file (it needs only numpy and torch)."""
    source = subprocess.run(
        ["git", "show", f"{ref}:hf_pept/data.py"], cwd=HERE.parent, check=True, capture_output=True, text=True
    ).stdout
    path = folder / "old_data.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("old_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["old_data"] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def _timed(call):
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


def _row(path: str, num_proc: int | str, run: str, seconds: float, tokens: int) -> dict[str, object]:
    return {
        "path": path,
        "num_proc": num_proc,
        "run": run,
        "seconds": round(seconds, 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / seconds) if seconds > 0 else "",
    }


def measure_old(old, tokenizer, scratch: Path) -> list[dict[str, object]]:
    corpus = old.load_corpus()
    rows = []
    for run in ("first", "cached"):
        (blocks, seconds) = _timed(
            lambda: old.TokenBlockDataset(old._cached_tokens(tokenizer, corpus, "train", None, scratch), SEQ_LEN)
        )
        rows.append(_row("old", 1, run, seconds, blocks.num_tokens))
    return rows


def measure_datasets(data, tokenizer, scratch: Path, num_proc: int) -> list[dict[str, object]]:
    rows = []
    cache = scratch / f"num_proc{num_proc}"
    # the corpus's own Arrow file in this cache first, so that only tokenization and packing are timed
    local = data.load_corpus(cache_dir=cache)
    for run in ("first", "cached"):
        ((train, _), seconds) = _timed(
            lambda: data.build_datasets(
                tokenizer, SEQ_LEN, dataset=local, max_eval_tokens=SEQ_LEN, cache_dir=cache, num_proc=num_proc
            )
        )
        rows.append(_row("datasets", num_proc, run, seconds, len(train) * SEQ_LEN))
    return rows


def measure_stream(data, tokenizer, scratch: Path) -> list[dict[str, object]]:
    corpus = data.load_corpus(streaming=True, cache_dir=scratch / "stream")
    blocks, seconds = _timed(lambda: sum(1 for _ in data.stream_blocks(corpus.train, tokenizer, SEQ_LEN)))
    rows = [_row("stream_blocks", 1, "first", seconds, blocks * SEQ_LEN)]
    train, _ = data.build_datasets(tokenizer, SEQ_LEN, dataset=corpus, max_eval_tokens=SEQ_LEN, streaming=True)
    _, seconds = _timed(lambda: sum(1 for _ in itertools.islice(iter(train), blocks)))
    rows.append(_row("TokenBlockStream", 1, "first", seconds, blocks * SEQ_LEN))
    return rows


def _table(rows: list[dict[str, object]]) -> str:
    lines = [f"{'path':<18} {'num_proc':>8} {'run':<7} {'seconds':>8} {'tokens':>11} {'tokens/s':>11}"]
    for r in rows:
        lines.append(
            f"{r['path']:<18} {r['num_proc']:>8} {r['run']:<7} {r['seconds']:>8.2f} {r['tokens']:>11,} "
            f"{r['tokens_per_s']:>11,}"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old_ref", default=OLD_REF, help="git commit holding the hand-written hf_pept/data.py")
    parser.add_argument("--out", default=str(HERE / "results" / "data_pipeline"))
    parser.add_argument("--vocab_size", type=int, default=8192)
    args = parser.parse_args(argv)

    import torch

    from hf_pept import data
    from hf_pept.runner import hardware_line

    env = environment()
    env["hardware"] = hardware_line("cuda" if torch.cuda.is_available() else "cpu")
    env["cpu_cores"] = str(os.cpu_count())
    env["load_average_at_start"] = " ".join(f"{x:.1f}" for x in os.getloadavg())
    env["nice"] = str(os.nice(0))
    import datasets

    env["datasets"] = datasets.__version__
    print(" | ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        corpus = data.load_corpus(cache_dir=scratch / "tokenizer")
        tokenizer = data.get_tokenizer(args.vocab_size, corpus=corpus, cache_dir=scratch / "tokenizer")
        old = _old_module(args.old_ref, scratch)
        rows = measure_old(old, tokenizer, scratch / "old")
        for num_proc in (1, 2):
            rows += measure_datasets(data, tokenizer, scratch, num_proc)
        rows += measure_stream(data, tokenizer, scratch)
    print(_table(rows))
    slug = env["device"].replace("NVIDIA ", "").replace(" ", "_").lower() if torch.cuda.is_available() else "cpu"
    out = Path(args.out) / f"data_pipeline_{slug}.csv"
    write_csv(str(out), env, rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
