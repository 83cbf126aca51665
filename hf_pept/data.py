"""Pre-training data on 🤗 ``datasets``: a corpus, a BPE tokenizer trained on it, packed token blocks.

**The built-in corpus** is the Python standard library's own ``.py`` sources, which every Python install has (about
12 MB of text without the test suites on CPython 3.11), as a ``datasets.Dataset`` with one row per file: a sorted,
deterministic file list, split *by file* so the held-out text is never seen in training (every ``EVAL_EVERY``-th
file is held out). The text differs between Python versions, so numbers are comparable only on the same Python; the
corpus fingerprint names what was used.

**A local corpus** is a ``.txt`` file (one document per file), a ``.jsonl`` / ``.json`` file or a ``.parquet`` file
(one document per record, its text in ``text_field``), or a folder of such files, read with
``datasets.load_dataset``; the held-out split is every ``EVAL_EVERY``-th document, as for the built-in corpus. A
**hub dataset** ``owner/name[:config]`` is read the same way when the machine has network access.

**Streaming** (``streaming=True``, ``hf-pept train --streaming``) reads a hub dataset or a large local corpus as it
trains: documents are tokenized and packed on the fly, mixed in a seeded shuffle buffer, and never all held in
memory. The first ``STREAM_EVAL_DOCUMENTS`` documents of the stream are the held-out split (materialized, so every
evaluation sees the same text). The training stream (:class:`TokenBlockStream`) has ``state_dict()`` /
``load_state_dict()``: :class:`StreamStateCallback` writes its state into every Trainer checkpoint and
:func:`restore_stream_state` puts it back, so a resumed run sees exactly the batches an uninterrupted one would.

Public API::

    tokenizer = get_tokenizer(vocab_size=8192)                    # BPE on the corpus, cached
    train_ds, eval_ds = build_datasets(tokenizer, seq_len=256)   # datasets.Dataset of {"input_ids", "labels"}
    train_ds, eval_ds = build_datasets(tokenizer, 256, dataset="corpus.jsonl", streaming=True)

**Caches** live under ``$HF_PEPT_CACHE`` (default ``~/.cache/hf_pept``): ``tokenizers/`` holds the trained BPE
tokenizers (keyed by the corpus fingerprint and the vocabulary size), ``datasets/`` the Arrow files of ``datasets``
(the corpus, its tokenized and packed forms), reused by ``datasets``' own fingerprints: a changed file, tokenizer
or ``seq_len`` is a new fingerprint, never a stale cache.
"""

from __future__ import annotations

import collections
import copy
import functools
import hashlib
import json
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

BUILTIN = "builtin"
EOS_TOKEN = "<|endoftext|>"
EVAL_EVERY = 20  # one document in 20 is held out
STREAM_EVAL_DOCUMENTS = 200  # a stream's held-out split: its first documents
DEFAULT_VOCAB_SIZE = 8192
# BPE merges are learned from about TOKENIZER_CHARS_PER_TOKEN characters of training text per vocabulary entry, at
# most TOKENIZER_MAX_TRAIN_CHARS: enough text for stable merge counts, little enough that training takes seconds.
TOKENIZER_CHARS_PER_TOKEN = 500
TOKENIZER_MAX_TRAIN_CHARS = 4_000_000
# Documents packed together: a block never spans two packing batches, so at most one partial block (< seq_len
# tokens) per this many documents is dropped. Packing runs in one process, so blocks do not depend on num_proc.
PACK_BATCH_DOCUMENTS = 1000
STREAM_PACK_BATCH_DOCUMENTS = 64
DEFAULT_SHUFFLE_BUFFER = 1000  # blocks
CACHE_ENV = "HF_PEPT_CACHE"
STREAM_STATE_FILE = "stream_state.pt"
_CACHE_FORMAT = "2"  # bump when the cached files' layout or the tokenizer recipe changes
_EXCLUDED_DIRS = {"test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__"}
# How datasets.load_dataset reads each local file type (one document per .txt file).
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".txt": "text"}
_LOCAL_SUFFIXES = tuple(_BUILDERS)


def cache_root() -> Path:
    """Where tokenizers and datasets' Arrow files are cached: ``$HF_PEPT_CACHE`` or ``~/.cache/hf_pept``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hf_pept")


def _datasets_cache(cache_dir: str | os.PathLike | None) -> str:
    return str(Path(cache_dir or cache_root()) / "datasets")


@dataclass
class Corpus:
    """A corpus split into training and held-out documents (``datasets`` objects with one ``"text"`` column).

    ``train`` is a ``datasets.Dataset``, or a ``datasets.IterableDataset`` when ``streaming``; ``eval`` is always a
    ``datasets.Dataset``. ``fingerprint`` names the content (it keys the tokenizer cache).
    """

    name: str
    train: Any
    eval: Any
    fingerprint: str
    streaming: bool = False

    @property
    def train_documents(self) -> list[str]:
        """The training texts as a list (reads them all into memory; not for a stream)."""
        if self.streaming:
            raise ValueError("A streamed corpus has no list of training documents; iterate corpus.train instead")
        return list(self.train["text"])

    @property
    def eval_documents(self) -> list[str]:
        return list(self.eval["text"])


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


def split_indices(num_documents: int, eval_every: int = EVAL_EVERY) -> tuple[list[int], list[int]]:
    """``(train, held_out)`` row indices: every ``eval_every``-th document (the last of each group) is held out."""
    held_out = list(range(eval_every - 1, num_documents, eval_every))
    train = [index for index in range(num_documents) if index % eval_every != eval_every - 1]
    return train, held_out


def _builtin_rows(files: list[tuple[str, int, int]]) -> Iterator[dict[str, str]]:
    # ``files`` carries each file's size and mtime so that datasets' fingerprint (a hash of these arguments)
    # changes when a file does.
    for path, _size, _mtime in files:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
        if text.strip():
            yield {"text": text}


def _file_stats(paths: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths]


def _builtin_dataset(cache_dir):
    import datasets

    return datasets.Dataset.from_generator(
        _builtin_rows,
        gen_kwargs={"files": _file_stats(builtin_files())},
        features=datasets.Features({"text": datasets.Value("string")}),
        cache_dir=_datasets_cache(cache_dir),
    )


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in _BUILDERS)
        if not files:
            raise ValueError(f"Dataset folder {path} holds no {', '.join(_LOCAL_SUFFIXES)} file")
        return files
    if path.suffix not in _BUILDERS:
        raise ValueError(f"Dataset file {path} must end in {', '.join(_LOCAL_SUFFIXES)}")
    return [path]


def _load_local(path: Path, text_field: str, streaming: bool, cache_dir):
    """The records of a local file or folder (files of several types are read type by type, in sorted order)."""
    import datasets

    files = _local_files(path)
    by_builder: dict[str, list[str]] = {}
    for file in files:
        by_builder.setdefault(_BUILDERS[file.suffix], []).append(str(file))
    parts = []
    for builder, data_files in sorted(by_builder.items()):
        options = {"sample_by": "document"} if builder == "text" else {}
        try:
            part = datasets.load_dataset(
                builder,
                data_files=data_files,
                split="train",
                streaming=streaming,
                cache_dir=_datasets_cache(cache_dir),
                **options,
            )
        except Exception as err:  # datasets wraps a parse error in DatasetGenerationError
            cause = err.__cause__ or err
            raise ValueError(f"Dataset {path} could not be read as {builder}: {_first_line(cause)}") from None
        parts.append(_text_column(part, text_field if builder != "text" else "text", str(path)))
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _text_column(ds, text_field: str, name: str):
    """``ds`` with only its text, in a column named ``"text"``; a clear error when the field is missing."""
    fields = list(ds.column_names or [])
    if ds.column_names is None:  # a stream whose features are unknown until read: peek at one record
        first = next(iter(ds.take(1)), None)
        fields = sorted(first) if first is not None else []
    if text_field not in fields:
        raise ValueError(f"Dataset {name} has no field {text_field!r} (fields found: {fields}); set --text_field")
    ds = ds.select_columns([text_field])
    return ds.rename_column(text_field, "text") if text_field != "text" else ds


# A hub dataset name: ``owner/name`` with an optional ``:config`` (the hub's own repository-id form).
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(:[\w.-]+)?")
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def is_hub_name(dataset: str) -> bool:
    """``owner/name[:config]`` and not a file name we read (``data/corpus.txt`` is a missing path, not a repo)."""
    text = os.fspath(dataset)
    return bool(_HUB_NAME.fullmatch(text)) and not text.partition(":")[0].endswith(_LOCAL_SUFFIXES)


def _offline() -> bool:
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in _OFFLINE_ENV)


def check_dataset(dataset: str) -> None:
    """Refuse a ``dataset`` that is neither ``builtin``, an existing path, nor a reachable hub name, before any
    work starts."""
    text = os.fspath(dataset)
    if text == BUILTIN or os.path.exists(text):
        return
    if not is_hub_name(text):
        raise ValueError(
            f"Dataset path {text} does not exist (use 'builtin', a local {'/'.join(_LOCAL_SUFFIXES)} file or folder, "
            "or a hub dataset 'owner/name[:config]')"
        )
    if _offline():
        offline = [name for name in _OFFLINE_ENV if os.environ.get(name)]
        raise ValueError(
            f"Dataset {text!r} is a Hugging Face hub name, but {'/'.join(offline)} says there is no network; "
            "pass a local file or folder"
        )


def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached (its host name does not resolve), or None: checked once, so that a machine
    with no network fails at once instead of after the hub client's retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or constants.ENDPOINT
    try:
        socket.getaddrinfo(host, 443)
    except OSError as err:
        return f"{host} does not resolve: {err}"
    return None


def _load_hub(name: str, text_field: str, streaming: bool, cache_dir):
    import datasets

    unreachable = _hub_unreachable()
    if unreachable:
        raise ValueError(
            f"Hub dataset {name!r} needs the network, which this machine lacks ({unreachable}); pass a local file or "
            "folder"
        )
    repo, _, config = name.partition(":")
    try:
        ds = datasets.load_dataset(
            repo, config or None, split="train", streaming=streaming, cache_dir=_datasets_cache(cache_dir)
        )
        return _text_column(ds, text_field, repr(name))
    except ValueError as err:
        if "has no field" in str(err):
            raise
        raise ValueError(f"Hub dataset {name!r} could not be loaded ({_first_line(err)})") from None
    except Exception as err:  # no network, no such repository, no access
        raise ValueError(
            f"Hub dataset {name!r} could not be loaded ({_first_line(err)}); check the name and the network, or "
            "pass a local file or folder"
        ) from None


def _nonempty(batch: dict[str, list]) -> list[bool]:
    return [bool(text and text.strip()) for text in batch["text"]]


def _split_single_document(ds):
    """One document: its last 5 % is held out instead of a whole document."""
    import datasets

    text = ds[0]["text"]
    cut = int(len(text) * 0.95)
    return datasets.Dataset.from_dict({"text": [text[:cut]]}), datasets.Dataset.from_dict({"text": [text[cut:]]})


def _stream_fingerprint(name: str, files: list[Path]) -> str:
    """A stream's fingerprint: its name and its local files' sizes and modification times (none for a hub name)."""
    digest = hashlib.sha256(f"{_CACHE_FORMAT}|stream|{name}".encode())
    digest.update(json.dumps(_file_stats(files)).encode())
    return digest.hexdigest()[:16]


def load_corpus(
    dataset: str = BUILTIN,
    text_field: str = "text",
    streaming: bool = False,
    cache_dir: str | os.PathLike | None = None,
    stream_eval_documents: int = STREAM_EVAL_DOCUMENTS,
) -> Corpus:
    """The documents of ``dataset`` (``"builtin"``, a local file or folder, or a hub name ``"owner/name[:config]"``),
    split into training and held-out documents: every ``EVAL_EVERY``-th one is held out, or with ``streaming`` the
    first ``stream_eval_documents`` of the stream."""
    dataset = os.fspath(dataset)
    check_dataset(dataset)
    path = Path(dataset) if dataset != BUILTIN and os.path.exists(dataset) else None
    if dataset == BUILTIN:
        ds = _builtin_dataset(cache_dir)
        ds = ds.to_iterable_dataset() if streaming else ds
        name = f"builtin (Python {sys.version_info.major}.{sys.version_info.minor} standard library)"
    elif path is not None:
        ds = _load_local(path, text_field, streaming, cache_dir)
        name = str(path.resolve())
    else:
        ds = _load_hub(dataset, text_field, streaming, cache_dir)
        name = dataset
    ds = ds.filter(_nonempty, batched=True)
    if streaming:
        files = builtin_files() if dataset == BUILTIN else _local_files(path) if path is not None else []
        return _split_stream(ds, name, _stream_fingerprint(name, files), stream_eval_documents)
    if len(ds) == 0:
        raise ValueError(f"Dataset {dataset!r} holds no text")
    if len(ds) == 1:
        train, held_out = _split_single_document(ds)
    else:
        train_rows, eval_rows = split_indices(len(ds), min(EVAL_EVERY, len(ds)))
        train, held_out = ds.select(train_rows), ds.select(eval_rows)
    fingerprint = hashlib.sha256(f"{_CACHE_FORMAT}|{name}|{train._fingerprint}|{held_out._fingerprint}".encode())
    return Corpus(name, train, held_out, fingerprint.hexdigest()[:16])


def _split_stream(stream, name: str, fingerprint: str, eval_documents: int) -> Corpus:
    import datasets

    if isinstance(eval_documents, bool) or not isinstance(eval_documents, int) or eval_documents < 1:
        raise ValueError(f"stream_eval_documents must be a positive integer, got {eval_documents!r}")
    held_out = [row["text"] for row in stream.take(eval_documents)]
    if not held_out:
        raise ValueError(f"Dataset {name!r} holds no text")
    if next(iter(stream.skip(eval_documents).take(1)), None) is None:
        raise ValueError(
            f"Dataset {name!r} holds only {len(held_out)} documents, all taken by the held-out split of a stream "
            f"({eval_documents} documents); stream a larger corpus or drop --streaming"
        )
    eval_ds = datasets.Dataset.from_dict({"text": held_out})
    return Corpus(name, stream.skip(eval_documents), eval_ds, fingerprint, streaming=True)


def _tokenizer_training_text(corpus: Corpus, max_chars: int) -> list[str]:
    """About ``max_chars`` characters of training text: every k-th document, k chosen so that about ``max_chars``
    remain (deterministic, spread over the whole corpus); from a stream, its first documents."""
    if corpus.streaming:
        texts, total = [], 0
        for row in corpus.train:
            texts.append(row["text"])
            total += len(row["text"])
            if total >= max_chars:
                break
        return texts
    documents = corpus.train_documents
    total = sum(map(len, documents))
    stride = max(1, -(-total // max_chars))
    return documents[::stride]


def train_bpe_tokenizer(documents: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (Sennrich et al. 2016; GPT-2's byte alphabet, so no text is ever unknown) with
    ``vocab_size`` tokens including the end-of-text token, trained on ``documents``."""
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
    tokenizer.train_from_iterator(documents, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def get_tokenizer(
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    corpus: str | Corpus = BUILTIN,
    text_field: str = "text",
    cache_dir: str | os.PathLike | None = None,
):
    """The BPE tokenizer of ``corpus`` (see :func:`load_corpus`) with ``vocab_size`` tokens, trained once on about
    ``TOKENIZER_CHARS_PER_TOKEN`` characters per token (at most ``TOKENIZER_MAX_TRAIN_CHARS``) of its training
    documents and then loaded from the cache (a ``transformers.PreTrainedTokenizerFast``; end-of-text is also its
    BOS and padding token)."""
    from transformers import PreTrainedTokenizerFast

    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
        raise ValueError(f"vocab_size must be an integer, got {vocab_size!r}")
    loaded = corpus if isinstance(corpus, Corpus) else load_corpus(corpus, text_field, cache_dir=cache_dir)
    folder = Path(cache_dir or cache_root()) / "tokenizers" / f"{loaded.fingerprint}-bpe{vocab_size}"
    if (folder / "tokenizer.json").is_file():
        return PreTrainedTokenizerFast.from_pretrained(folder)
    max_chars = min(TOKENIZER_MAX_TRAIN_CHARS, TOKENIZER_CHARS_PER_TOKEN * vocab_size)
    tokenizer = train_bpe_tokenizer(_tokenizer_training_text(loaded, max_chars), vocab_size)
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


def _derived_fingerprint(*parts: Any) -> str:
    return hashlib.sha256("|".join(map(str, (_CACHE_FORMAT, *parts))).encode()).hexdigest()[:16]


# ---- tokenization and packing (functions of a batch of rows, for datasets' map) ---------------------------------


def tokenize_batch(batch: dict[str, list], tokenizer) -> dict[str, list[list[int]]]:
    """``{"input_ids": ...}``: each text's token ids followed by the end-of-text token."""
    eos = tokenizer.eos_token_id
    encodings = tokenizer.backend_tokenizer.encode_batch(batch["text"])
    return {"input_ids": [encoding.ids + [eos] for encoding in encodings]}


def pack_table(table, seq_len: int):
    """The token ids of a batch of documents (an Arrow table), concatenated and cut into blocks of ``seq_len`` (the
    tail shorter than a block is dropped), as an Arrow table of ``input_ids`` and ``labels``: labels equal the
    inputs, causal-LM models shift them by one inside the loss. Arrow end to end, so no token becomes a Python int.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    tokens = pc.list_flatten(table["input_ids"])
    tokens = tokens.combine_chunks() if isinstance(tokens, pa.ChunkedArray) else tokens
    count = len(tokens) // seq_len
    offsets = pa.array(np.arange(0, count * seq_len + 1, seq_len, dtype=np.int32))
    blocks = pa.ListArray.from_arrays(offsets, tokens.slice(0, count * seq_len).cast(pa.int32()))
    return pa.table({"input_ids": blocks, "labels": blocks})


def _check_seq_len(seq_len) -> None:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise ValueError(f"seq_len must be an integer >= 2, got {seq_len!r}")


def _token_features():
    import datasets

    return datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})


def _block_features():
    import datasets

    ids = datasets.Sequence(datasets.Value("int32"))
    return datasets.Features({"input_ids": ids, "labels": ids})


def tokenize_and_pack(documents, tokenizer, seq_len: int, num_proc: int | None = None, description: str = "corpus"):
    """The blocks of a ``datasets.Dataset`` of documents: ``map`` tokenizes (in ``num_proc`` processes, with a
    progress bar) and packs, each step cached under a fingerprint of its input, the tokenizer and ``seq_len``."""
    tokenizer_id = _tokenizer_fingerprint(tokenizer)
    tokens = documents.map(
        functools.partial(tokenize_batch, tokenizer=tokenizer),
        batched=True,
        num_proc=num_proc if num_proc and num_proc > 1 and len(documents) > 1 else None,
        remove_columns=documents.column_names,
        features=_token_features(),
        new_fingerprint=_derived_fingerprint("tokenize", documents._fingerprint, tokenizer_id),
        desc=f"Tokenizing {description}",
    )
    return tokens.with_format("arrow").map(
        functools.partial(pack_table, seq_len=seq_len),
        batched=True,
        batch_size=PACK_BATCH_DOCUMENTS,
        remove_columns=tokens.column_names,
        features=_block_features(),
        new_fingerprint=_derived_fingerprint("pack", tokens._fingerprint, seq_len),
        desc=f"Packing {description} into blocks of {seq_len}",
    )


def _blocks_for_tokens(documents, tokenizer, seq_len: int, limit: int | None, num_proc, description: str):
    """Packed blocks of the first ``limit`` tokens (all with None). Only a prefix of the documents is tokenized,
    grown until it holds enough tokens: packing batches start at fixed documents, so a longer prefix only adds
    blocks at the end and the first ``limit // seq_len`` blocks are the same for any prefix that holds them."""
    if limit is None:
        return tokenize_and_pack(documents, tokenizer, seq_len, num_proc, description)
    wanted = limit // seq_len
    count = min(len(documents), _documents_for_chars(documents, 2 * limit))
    while True:
        blocks = tokenize_and_pack(documents.select(range(count)), tokenizer, seq_len, num_proc, description)
        if len(blocks) >= wanted or count == len(documents):
            return blocks.select(range(min(wanted, len(blocks))))
        count = min(len(documents), 2 * count)


def _documents_for_chars(documents, chars: int) -> int:
    """How many leading documents hold at least ``chars`` characters (at least one)."""
    total = 0
    for index, text in enumerate(documents["text"], start=1):
        total += len(text)
        if total >= chars:
            return index
    return max(1, len(documents))


def _check_limit(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer or None, got {value!r}")


def _check_blocks(blocks, split: str, corpus: Corpus, seq_len: int) -> None:
    if len(blocks) == 0:
        raise ValueError(
            f"The {split} split of {corpus.name} holds less than one block of seq_len={seq_len} tokens; use a larger "
            "corpus, a larger token limit or a shorter seq_len"
        )


def build_datasets(
    tokenizer,
    seq_len: int,
    dataset: str | Corpus = BUILTIN,
    max_train_tokens: int | None = None,
    max_eval_tokens: int | None = None,
    text_field: str = "text",
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
    streaming: bool = False,
    seed: int = 0,
    shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
    rank: int | None = None,
    world_size: int | None = None,
):
    """``(train_ds, eval_ds)``: the training and held-out documents of ``dataset`` tokenized with ``tokenizer`` and
    packed into blocks of ``seq_len`` tokens (documents separated by the end-of-text token), at most
    ``max_train_tokens`` / ``max_eval_tokens`` each (from the start of the corpus, so the same limit gives the same
    data). Both are ``datasets.Dataset`` objects yielding ``{"input_ids", "labels"}`` tensors.

    With ``streaming``, ``train_ds`` is a :class:`TokenBlockStream` (tokenized and packed on the fly, shuffled in a
    buffer of ``shuffle_buffer`` blocks seeded by ``seed``, repeated pass after pass); with ``world_size > 1`` each
    ``rank`` streams its own share of the blocks (see :func:`stream_blocks`). A ``Trainer`` needs neither: under
    DDP its main process reads the stream and dispatches every rank's batches.

    Raises ValueError when a split holds less than one block.
    """
    _check_seq_len(seq_len)
    _check_limit("max_train_tokens", max_train_tokens)
    _check_limit("max_eval_tokens", max_eval_tokens)
    corpus = dataset if isinstance(dataset, Corpus) else load_corpus(dataset, text_field, streaming, cache_dir)
    if streaming and not corpus.streaming:
        raise ValueError("build_datasets(streaming=True) needs a streamed corpus: load_corpus(..., streaming=True)")
    eval_ds = _blocks_for_tokens(corpus.eval, tokenizer, seq_len, max_eval_tokens, num_proc, "held-out documents")
    _check_blocks(eval_ds, "held-out", corpus, seq_len)
    if corpus.streaming:
        make_blocks = functools.partial(
            stream_blocks, corpus.train, tokenizer, seq_len, max_train_tokens, rank=rank, world_size=world_size
        )
        if next(iter(make_blocks()), None) is None:  # reads only up to the first block
            _check_blocks([], "training", corpus, seq_len)
        train_ds = TokenBlockStream(make_blocks, seq_len, seed=seed, shuffle_buffer=shuffle_buffer)
    else:
        train_ds = _blocks_for_tokens(
            corpus.train, tokenizer, seq_len, max_train_tokens, num_proc, "training documents"
        )
        _check_blocks(train_ds, "training", corpus, seq_len)
        train_ds = train_ds.with_format("torch")
    return train_ds, eval_ds.with_format("torch")


# ---- streaming ------------------------------------------------------------------------------------------------


def stream_blocks(documents, tokenizer, seq_len: int, max_tokens: int | None = None, rank=None, world_size=None):
    """A ``datasets.IterableDataset`` of packed blocks from a stream of documents, tokenized and packed on the fly,
    at most ``max_tokens // seq_len`` blocks; with ``world_size > 1``, this rank's share of them
    (``split_dataset_by_node``: whole files when their number divides by ``world_size``, else every
    ``world_size``-th block)."""
    tokens = documents.map(
        functools.partial(tokenize_batch, tokenizer=tokenizer), batched=True, remove_columns=["text"]
    )
    # An Arrow-formatted map's output table replaces the batch (no remove_columns: it would drop the new columns).
    blocks = tokens.with_format("arrow").map(
        functools.partial(pack_table, seq_len=seq_len), batched=True, batch_size=STREAM_PACK_BATCH_DOCUMENTS
    )
    blocks = blocks.with_format(None)
    blocks = blocks.take(max_tokens // seq_len) if max_tokens is not None else blocks
    if world_size is not None and world_size > 1:
        from datasets.distributed import split_dataset_by_node

        blocks = split_dataset_by_node(blocks, rank=rank or 0, world_size=world_size)
    return blocks


class TokenBlockStream(torch.utils.data.IterableDataset):
    """Blocks of a stream (``make_blocks()`` builds a fresh ``datasets.IterableDataset`` of them), mixed in a
    seeded shuffle buffer and repeated pass after pass, with an exact ``state_dict()``.

    The state is the stream's own ``state_dict()`` plus what datasets' shuffle buffer would lose on resume: the
    buffer's blocks and the random generator. A DataLoader reads ahead of training, so the stream keeps the states
    after each of its last ``history`` blocks and :meth:`state_dict` takes the one after ``consumed`` blocks.
    Memory is constant in the length of the stream: the buffer, and ``history`` shallow copies of it.
    """

    def __init__(
        self,
        make_blocks,
        seq_len: int,
        seed: int = 0,
        shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER,
        history: int = 1024,
    ):
        for name, value in (("shuffle_buffer", shuffle_buffer), ("history", history)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.make_blocks, self.seq_len, self.seed = make_blocks, seq_len, seed
        self.shuffle_buffer = shuffle_buffer
        self._history: collections.deque = collections.deque(maxlen=history)
        self._start = self._initial_state()
        self._history.append((0, self._start))

    def _initial_state(self) -> dict:
        import numpy as np

        return {
            "yielded": 0,
            "pass": 0,
            "source": None,
            "buffer": [],
            "rng": np.random.default_rng([self.seed, 0]).bit_generator.state,
        }

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        import numpy as np

        state = copy.deepcopy(self._start)
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng"]
        buffer, yielded, passes = list(state["buffer"]), state["yielded"], state["pass"]
        source_state = state["source"]
        while True:
            source = self.make_blocks()
            if source_state is not None:
                source.load_state_dict(source_state)
            pulled_any = False
            for example in source:
                pulled_any = True
                buffer.append(example["input_ids"])
                if len(buffer) < self.shuffle_buffer:
                    continue
                yielded += 1
                yield self._emit(buffer, rng, yielded, passes, source)
            while buffer:  # the stream ended: drain the buffer
                yielded += 1
                yield self._emit(buffer, rng, yielded, passes, source)
            if not pulled_any and source_state is None:
                raise ValueError("The training stream holds less than one block")
            passes, source_state = passes + 1, None
            rng = np.random.default_rng([self.seed, passes])

    def _emit(self, buffer: list, rng, yielded: int, passes: int, source) -> dict[str, torch.Tensor]:
        """Take a random block out of the buffer (swap with the last: O(1)) and record the state after it."""
        index = int(rng.integers(len(buffer)))
        buffer[index], buffer[-1] = buffer[-1], buffer[index]
        block = torch.tensor(buffer.pop(), dtype=torch.long)
        self._history.append(
            (
                yielded,
                {
                    "yielded": yielded,
                    "pass": passes,
                    "source": source.state_dict(),
                    "buffer": list(buffer),
                    "rng": rng.bit_generator.state,
                },
            )
        )
        return {"input_ids": block, "labels": block.clone()}

    def state_dict(self, consumed: int | None = None) -> dict:
        """The state after ``consumed`` blocks (default: after the last block yielded), for :meth:`load_state_dict`."""
        for count, state in reversed(self._history):
            if consumed is None or count == consumed:
                return copy.deepcopy(state)
        known = [count for count, _ in self._history]
        raise ValueError(
            f"The stream's state after {consumed} blocks is not kept (it keeps blocks {known[0]}..{known[-1]}); "
            "raise TokenBlockStream(history=...) above the DataLoader's read-ahead"
        )

    def load_state_dict(self, state: dict) -> None:
        """Continue, on the next ``iter()``, right after the block that ``state`` was taken at."""
        self._start = copy.deepcopy(state)
        self._history.clear()
        self._history.append((state["yielded"], self._start))


def save_stream_state(stream: TokenBlockStream, folder: str | os.PathLike, consumed: int) -> Path:
    """Write the stream's state after ``consumed`` blocks into ``folder`` (the buffer as one int32 tensor, the rest as
    JSON text), so that ``torch.load(weights_only=True)`` reads it back."""
    state = stream.state_dict(consumed)
    buffer = state.pop("buffer")
    payload = {
        "state": json.dumps(state),
        "buffer": torch.tensor(buffer, dtype=torch.int32).reshape(len(buffer), stream.seq_len),
    }
    path = Path(folder) / STREAM_STATE_FILE
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)
    return path


def restore_stream_state(stream: TokenBlockStream, checkpoint: str | os.PathLike) -> None:
    """Put back the stream state that :class:`StreamStateCallback` saved in ``checkpoint``."""
    path = Path(checkpoint) / STREAM_STATE_FILE
    if not path.is_file():
        raise ValueError(f"Checkpoint {checkpoint} holds no {STREAM_STATE_FILE}: it was not saved by a streaming run")
    payload = torch.load(path, weights_only=True)
    state = json.loads(payload["state"])
    state["buffer"] = payload["buffer"].tolist()
    stream.load_state_dict(state)


class StreamStateCallback(TrainerCallback):
    """Writes the training stream's state into each Trainer checkpoint (``checkpoint-N/stream_state.pt``).

    Blocks consumed by step N: ``N × gradient_accumulation_steps × per_device_train_batch_size``, times the number
    of processes, since accelerate's default for an iterable dataset is that the main process reads the batches of
    every rank and dispatches them. Needs ``dataloader_num_workers=0`` (the stream is read in this process) and
    ``ignore_data_skip=True`` (the restored stream is already past the trained batches). Resume with
    :func:`restore_stream_state` before ``trainer.train(resume_from_checkpoint=...)``.
    """

    def __init__(self, stream: TokenBlockStream):
        self.stream = stream

    def on_train_begin(self, args, state, control, **kwargs):
        if args.dataloader_num_workers:
            raise ValueError("Resumable streaming needs dataloader_num_workers=0 (the stream is read in this process)")
        if not args.ignore_data_skip:
            raise ValueError("Resumable streaming needs ignore_data_skip=True (the restored stream skips by itself)")

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        consumed = state.global_step * args.gradient_accumulation_steps * args.per_device_train_batch_size
        consumed *= max(1, args.world_size)
        save_stream_state(self.stream, Path(args.output_dir) / f"checkpoint-{state.global_step}", consumed)
