"""Pre-training data with no download: a corpus, a BPE tokenizer trained on it, fixed-length token blocks.

The built-in corpus is the Python standard library's own ``.py`` sources, which every Python install has (about
12 MB of text without the test suites on CPython 3.11): a sorted, deterministic file list, split *by file* so the
held-out text is never seen in training (every ``EVAL_EVERY``-th file is held out). The text differs between Python
versions, so numbers are comparable only on the same Python; the corpus fingerprint names what was used.

Users can also pass a local ``.txt`` / ``.jsonl`` file or a folder of them (one document per ``.txt`` file or per
JSON line), or a Hugging Face hub dataset name (needs the optional ``datasets`` package and network access).

Public API::

    tokenizer = get_tokenizer(vocab_size=8192)                    # BPE on the corpus, cached
    train_ds, eval_ds = build_datasets(tokenizer, seq_len=256)   # torch Datasets of {"input_ids", "labels"}

Tokenizers and tokenized corpora are cached under ``$HF_PEPT_CACHE`` (default ``~/.cache/hf_pept``), keyed by a
hash of the corpus content and the tokenizer, so a changed file never reuses a stale cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

BUILTIN = "builtin"
EOS_TOKEN = "<|endoftext|>"
EVAL_EVERY = 20  # one document in 20 is held out
DEFAULT_VOCAB_SIZE = 8192
# BPE merges are learned from about TOKENIZER_CHARS_PER_TOKEN characters of training text per vocabulary entry, at
# most TOKENIZER_MAX_TRAIN_CHARS: enough text for stable merge counts, little enough that training takes seconds.
TOKENIZER_CHARS_PER_TOKEN = 500
TOKENIZER_MAX_TRAIN_CHARS = 4_000_000
HUB_DEFAULT_MAX_CHARS = 50_000_000
CACHE_ENV = "HF_PEPT_CACHE"
_CACHE_FORMAT = "1"  # bump when the cached files' layout or the tokenizer recipe changes
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}


def cache_root() -> Path:
    """Where tokenizers and token arrays are cached: ``$HF_PEPT_CACHE`` or ``~/.cache/hf_pept``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_pept")


@dataclass
class Corpus:
    """Documents of a corpus, split into training and held-out documents, with a fingerprint of their content."""

    name: str
    train_documents: list[str]
    eval_documents: list[str]
    fingerprint: str

    @property
    def num_characters(self) -> tuple[int, int]:
        return sum(map(len, self.train_documents)), sum(map(len, self.eval_documents))


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def builtin_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The built-in corpus's files: every ``.py`` of the standard library except test suites and installed
    packages, sorted by their path relative to ``root`` (so the order is the same on every machine)."""
    root = Path(root) if root is not None else stdlib_root()
    found = []
    for folder, subfolders, names in os.walk(root):
        # Pruned in place so the walk never enters test suites or installed packages.
        subfolders[:] = [name for name in subfolders if name not in _EXCLUDED_DIRS]
        relative = Path(folder).relative_to(root)
        found.extend(relative / name for name in names if name.endswith(".py"))
    if not found:
        raise RuntimeError(f"No Python sources found under {root}: the built-in corpus needs the standard library")
    return [root / relative for relative in sorted(found, key=lambda p: p.as_posix())]


def split_by_document(documents: Sequence, eval_every: int = EVAL_EVERY) -> tuple[list, list]:
    """Every ``eval_every``-th document (the last of each group) is held out; the rest is training data."""
    train = [doc for index, doc in enumerate(documents) if index % eval_every != eval_every - 1]
    held_out = [doc for index, doc in enumerate(documents) if index % eval_every == eval_every - 1]
    return train, held_out


def _read_text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _fingerprint(name: str, train: Iterable[str], held_out: Iterable[str]) -> str:
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|{name}".encode())
    for part, documents in (("train", train), ("eval", held_out)):
        digest.update(part.encode())
        for doc in documents:
            digest.update(len(doc).to_bytes(8, "little"))
            digest.update(doc.encode("utf-8", errors="replace"))
    return digest.hexdigest()[:16]


def _local_documents(path: Path, text_field: str) -> list[str]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in (".txt", ".jsonl"))
        if not files:
            raise ValueError(f"Dataset folder {path} holds no .txt or .jsonl file")
        return [doc for file in files for doc in _local_documents(file, text_field)]
    if path.suffix == ".txt":
        return [_read_text(path)]
    if path.suffix == ".jsonl":
        documents = []
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{line_number} is not valid JSON ({err})") from None
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise ValueError(f"{path}:{line_number} has no string field {text_field!r} (set --text_field)")
                documents.append(record[text_field])
        return documents
    raise ValueError(f"Dataset file {path} must end in .txt or .jsonl")


# A hub dataset name: ``owner/name`` with an optional ``:config`` (the hub's own repository-id form).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[\w.-]+)?")
_LOCAL_SUFFIXES = (".txt", ".jsonl")


def is_hub_name(dataset: str) -> bool:
    """``owner/name[:config]`` and not a file name we read (``data/corpus.txt`` is a missing path, not a repo)."""
    text = os.fspath(dataset)
    return bool(_HUB_NAME.fullmatch(text)) and not text.partition(":")[0].endswith(_LOCAL_SUFFIXES)


def check_dataset(dataset: str) -> None:
    """Refuse a ``dataset`` that is neither ``builtin``, an existing path, nor a hub name, before any work starts."""
    text = os.fspath(dataset)
    if text == BUILTIN or os.path.exists(text):
        return
    if not is_hub_name(text):
        raise ValueError(
            f"Dataset path {text} does not exist (use 'builtin', a local .txt/.jsonl file or folder, or a hub "
            "dataset 'owner/name[:config]')"
        )
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise ValueError(
            f"Dataset {text!r} is a Hugging Face hub name, which needs the `datasets` package: `pip install "
            "datasets` (or pass a local .txt/.jsonl file)"
        ) from None


def _hub_documents(name: str, text_field: str, max_chars: int) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"Dataset {name!r} is neither 'builtin' nor a local path, so it would be a Hugging Face hub dataset, "
            "which needs the `datasets` package: `pip install datasets` (or pass a local .txt/.jsonl file)"
        ) from None
    repo, _, config = name.partition(":")
    stream = datasets.load_dataset(repo, config or None, split="train", streaming=True)
    documents, total = [], 0
    for record in stream:
        if text_field not in record:
            raise ValueError(f"Hub dataset {name!r} has no field {text_field!r}; fields: {sorted(record)}")
        documents.append(record[text_field])
        total += len(record[text_field])
        if total >= max_chars:
            break
    return documents


def load_corpus(dataset: str = BUILTIN, text_field: str = "text", hub_max_chars: int = HUB_DEFAULT_MAX_CHARS):
    """The documents of ``dataset`` (``"builtin"``, a local ``.txt``/``.jsonl`` file or folder, or a hub name
    ``"repo[:config]"``) split into training and held-out documents by :func:`split_by_document`."""
    dataset = os.fspath(dataset)
    check_dataset(dataset)
    if dataset == BUILTIN:
        documents = [_read_text(path) for path in builtin_files()]
        name = f"builtin (Python {sys.version_info.major}.{sys.version_info.minor} standard library)"
    elif os.path.exists(dataset):
        documents = _local_documents(Path(dataset), text_field)
        name = str(Path(dataset).resolve())
    else:
        documents = _hub_documents(dataset, text_field, hub_max_chars)
        name = dataset
    documents = [doc for doc in documents if doc.strip()]
    if len(documents) < 2:
        if len(documents) == 1:
            # A single document: hold out its last 5 % instead of a whole document.
            text = documents[0]
            cut = int(len(text) * 0.95)
            documents = [text[:cut], text[cut:]]
            train, held_out = documents[:1], documents[1:]
            return Corpus(name, train, held_out, _fingerprint(name, train, held_out))
        raise ValueError(f"Dataset {dataset!r} holds no text")
    train, held_out = split_by_document(documents, min(EVAL_EVERY, len(documents)))
    return Corpus(name, train, held_out, _fingerprint(name, train, held_out))


def _tokenizer_training_text(documents: list[str], max_chars: int) -> list[str]:
    """Every k-th document, k chosen so that about ``max_chars`` characters remain: deterministic and spread over
    the whole corpus rather than its first files."""
    total = sum(map(len, documents))
    stride = max(1, -(-total // max_chars))
    return documents[::stride]


def train_bpe_tokenizer(documents: list[str], vocab_size: int, max_chars: int | None = None):
    """A byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2's byte alphabet, so no text is ever unknown) with
    ``vocab_size`` tokens including the end-of-text token, trained on about ``max_chars`` characters of
    ``documents`` (default: ``TOKENIZER_CHARS_PER_TOKEN`` per token, at most ``TOKENIZER_MAX_TRAIN_CHARS``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(alphabet) + 1:
        raise ValueError(
            f"vocab_size must be at least {len(alphabet) + 1} (256 bytes + end-of-text), got {vocab_size}"
        )
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=alphabet,
        show_progress=False,
    )
    if max_chars is None:
        max_chars = min(TOKENIZER_MAX_TRAIN_CHARS, TOKENIZER_CHARS_PER_TOKEN * vocab_size)
    tokenizer.train_from_iterator(_tokenizer_training_text(documents, max_chars), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def get_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    corpus: str = BUILTIN,
    text_field: str = "text",
    cache_dir: str | os.PathLike | None = None,
):
    """The BPE tokenizer of ``corpus`` (see :func:`load_corpus`) with ``vocab_size`` tokens, trained once on its
    training documents and then loaded from the cache (a ``transformers.PreTrainedTokenizerFast``; end-of-text is
    also its BOS and padding token)."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    loaded = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, text_field)
    folder = Path(cache_dir or cache_root()) / "tokenizers" / f"{loaded.fingerprint}-bpe{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    tokenizer = train_bpe_tokenizer(loaded.train_documents, vocab_size)
    _atomic_save(folder, tokenizer.save_pretrained)
    return tokenizer


def load_tokenizer(name_or_path: str):
    """A tokenizer the user already has (a local folder, or a hub name when they have access)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if tokenizer.eos_token is None:
        raise ValueError(f"Tokenizer {name_or_path!r} has no end-of-text token to separate documents")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _atomic_save(folder: Path, save) -> None:
    """Write into a temporary sibling and rename, so a concurrent or interrupted run never sees half a cache."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    save(temporary)
    try:
        os.replace(temporary, folder)
    except OSError:
        # Another process finished first: its copy is equivalent (same fingerprint).
        import shutil

        shutil.rmtree(temporary, ignore_errors=True)


def _tokenizer_fingerprint(tokenizer) -> str:
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def tokenize_documents(tokenizer, documents: list[str], max_tokens: int | None = None) -> np.ndarray:
    """Token ids of ``documents``, each followed by the end-of-text token, concatenated (stopping once
    ``max_tokens`` are collected)."""
    eos = tokenizer.eos_token_id
    dtype = np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max else np.int32
    pieces, total, batch = [], 0, 8
    for start in range(0, len(documents), batch):
        for encoding in tokenizer.backend_tokenizer.encode_batch(documents[start : start + batch]):
            ids = np.asarray(encoding.ids + [eos], dtype=dtype)
            pieces.append(ids)
            total += len(ids)
        if max_tokens is not None and total >= max_tokens:
            break
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=dtype)
    return tokens[:max_tokens] if max_tokens is not None else tokens


def _cached_tokens(tokenizer, corpus: Corpus, split: str, limit: int | None, cache_dir: Path | None) -> np.ndarray:
    """Token ids of a split, from the cache when present. With a ``limit``, only the documents needed for the first
    ``limit`` tokens are tokenized (a short test run does not pay for the whole corpus)."""
    documents = corpus.train_documents if split == "train" else corpus.eval_documents
    folder = Path(cache_dir or cache_root()) / "tokens" / f"{corpus.fingerprint}-{_tokenizer_fingerprint(tokenizer)}"
    full = folder / f"{split}.npy"
    if full.is_file():
        tokens = np.load(full)
        return tokens[:limit] if limit is not None else tokens
    path = full if limit is None else folder / f"{split}-first{limit}.npy"
    if path.is_file():
        return np.load(path)
    tokens = tokenize_documents(tokenizer, documents, max_tokens=limit)
    if limit is not None and len(tokens) < limit:
        path = full  # the limit covered the whole split
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"{split}.tmp-{os.getpid()}.npy"
    np.save(temporary, tokens)
    os.replace(temporary, path)
    return tokens


class TokenBlockDataset(Dataset):
    """Consecutive, non-overlapping blocks of ``seq_len`` tokens as ``{"input_ids", "labels"}`` (labels equal the
    inputs: causal-LM models shift them by one position inside the loss). The tail shorter than a block is dropped.
    """

    def __init__(self, tokens: np.ndarray | torch.Tensor, seq_len: int):
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
            raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")
        tokens = torch.as_tensor(np.asarray(tokens, dtype=np.int64))
        self.seq_len = seq_len
        self.num_blocks = len(tokens) // seq_len
        self.blocks = tokens[: self.num_blocks * seq_len].view(self.num_blocks, seq_len)

    def __len__(self) -> int:
        return self.num_blocks

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        block = self.blocks[index]
        return {"input_ids": block, "labels": block.clone()}

    @property
    def num_tokens(self) -> int:
        return self.num_blocks * self.seq_len


def build_datasets(
    tokenizer,
    seq_len: int,
    dataset: str = BUILTIN,
    max_train_tokens: int | None = None,
    max_eval_tokens: int | None = None,
    text_field: str = "text",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[TokenBlockDataset, TokenBlockDataset]:
    """``(train_ds, eval_ds)``: the training and held-out documents of ``dataset`` tokenized with ``tokenizer`` and
    cut into blocks of ``seq_len`` tokens, at most ``max_train_tokens`` / ``max_eval_tokens`` each (from the start
    of the corpus, so the same limit gives the same data).

    Raises ValueError when a split holds less than one block.
    """
    for name, value in (("max_train_tokens", max_train_tokens), ("max_eval_tokens", max_eval_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
    corpus = dataset if isinstance(dataset, Corpus) else load_corpus(dataset, text_field)
    cache = Path(cache_dir) if cache_dir is not None else None
    splits = []
    for split, limit in (("train", max_train_tokens), ("eval", max_eval_tokens)):
        tokens = _cached_tokens(tokenizer, corpus, split, limit, cache)
        block_set = TokenBlockDataset(tokens, seq_len)
        if len(block_set) == 0:
            raise ValueError(
                f"The {split} split of {corpus.name} holds {len(tokens)} tokens, less than one block of seq_len="
                f"{seq_len}; use a larger corpus, a larger token limit or a shorter seq_len"
            )
        splits.append(block_set)
    return splits[0], splits[1]
