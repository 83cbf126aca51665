"""Resident memory of a training stream as it is read: constant in the length of the stream, or not?

Writes a local ``.jsonl`` corpus of ``--megabytes`` MB (the built-in corpus's documents, repeated), streams
``--tokens`` tokens of it with ``build_datasets(..., streaming=True)`` exactly as ``hf-pept train --streaming`` does
(on-the-fly tokenization, packing, the seeded shuffle buffer, pass after pass) and prints the process's resident
memory after every ``--every`` blocks. A stream whose memory is constant in its length shows the same memory in
every pass. Writes ``stream_memory_cpu.csv`` into ``--output_dir``::

    python benchmarks/stream_memory.py --megabytes 40 --tokens 60000000 --output_dir benchmarks/results/data_pipeline
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

from hf_pept import data


def rss_mb() -> float:
    """The process's current resident memory (Linux /proc), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_corpus(path: Path, megabytes: int) -> int:
    """The built-in corpus's documents repeated into ``path`` (one JSON line each) up to ``megabytes``; documents."""
    documents = data.load_corpus().train
    written = count = 0
    with open(path, "w", encoding="utf-8") as handle:
        while written < megabytes * 1e6:
            for document in documents:
                line = json.dumps({"text": document["text"]}) + "\n"
                handle.write(line)
                written += len(line)
                count += 1
                if written >= megabytes * 1e6:
                    break
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=int, default=40)
    parser.add_argument("--tokens", type=int, default=60_000_000, help="Tokens to stream (several passes).")
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--every", type=int, default=10_000, help="Blocks between two memory readings.")
    parser.add_argument("--output_dir", default="benchmarks/results/data_pipeline")
    args = parser.parse_args(argv)
    tokenizer = data.get_tokenizer(512)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        documents = write_corpus(corpus, args.megabytes)
        train, _ = data.build_datasets(tokenizer, args.seq_len, dataset=str(corpus), streaming=True, seed=0)
        started = time.perf_counter()
        blocks = 0
        for _ in train:
            blocks += 1
            if blocks % args.every == 0:
                rows.append([blocks, blocks * args.seq_len, round(rss_mb(), 1), round(time.perf_counter() - started)])
                print(f"{blocks:>9,} blocks  {blocks * args.seq_len / 1e6:8.1f}M tokens  RSS {rows[-1][2]:8.1f} MB")
            if blocks * args.seq_len >= args.tokens:
                break
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stream_memory_cpu.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write(f"# corpus: {args.megabytes} MB jsonl, {documents} documents, streamed {args.tokens:,} tokens; ")
        handle.write(f"seq_len {args.seq_len}; ")
        handle.write(f"{time.strftime('%Y-%m-%d')}; {sys.platform}\n")
        writer = csv.writer(handle)
        writer.writerow(["blocks", "tokens", "rss_mb", "seconds"])
        writer.writerows(rows)
    print(f"wrote {out / 'stream_memory_cpu.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
