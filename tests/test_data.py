"""Corpora, BPE tokenizer, packed blocks and streams on ``datasets``, checked against independent re-computations."""

import itertools
import json
import sys

import pytest
import torch

from hf_pept import data


@pytest.fixture(scope="module")
def corpus(cache_dir):
    return data.load_corpus()


@pytest.fixture(scope="module")
def tokenizer(cache_dir, corpus):
    return data.get_tokenizer(512, corpus=corpus)


def _write_jsonl(path, texts, field="text"):
    path.write_text("".join(json.dumps({field: text, "id": i}) + "\n" for i, text in enumerate(texts)))
    return path


def _texts(count, seed=0):
    """Documents of different lengths (so that blocks straddle documents)."""
    generator = torch.Generator().manual_seed(seed)
    words = ["alpha", "beta", "gamma", "delta", "ε", "zeta", "eta\n", "theta", "iota", "kappa"]
    lengths = torch.randint(3, 40, (count,), generator=generator).tolist()
    return [
        " ".join(words[j] for j in torch.randint(0, len(words), (n,), generator=generator).tolist()) for n in lengths
    ]


def _reference_blocks(tokenizer, documents, seq_len, batch_documents):
    """Blocks computed by hand: each document's ids (tokenizer.__call__) + EOS, concatenated per packing batch."""
    blocks = []
    for start in range(0, len(documents), batch_documents):
        tokens = []
        for text in documents[start : start + batch_documents]:
            tokens += tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
        blocks += [tokens[i : i + seq_len] for i in range(0, len(tokens) - seq_len + 1, seq_len)]
    return blocks


def test_builtin_files_are_sorted_sources_without_tests(tmp_path):
    for relative in ("b.py", "a/z.py", "a/test/t.py", "tests/u.py", "site-packages/p.py", "c.txt", "a/b/c.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x = 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in data.builtin_files(tmp_path)]
    assert found == ["a/b/c.py", "a/z.py", "b.py"]


def test_builtin_corpus_is_the_stdlib_with_a_file_level_held_out_split(corpus):
    import datasets

    assert isinstance(corpus.train, datasets.Dataset) and isinstance(corpus.eval, datasets.Dataset)
    files = data.builtin_files()
    assert "os.py" in {p.name for p in files}
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    nonempty = [text for text in texts if text.strip()]
    assert corpus.eval_documents == nonempty[data.EVAL_EVERY - 1 :: data.EVAL_EVERY]
    assert len(corpus.train) + len(corpus.eval) == len(nonempty)
    assert not set(corpus.eval_documents) & set(corpus.train_documents) - {""}
    assert str(sys.version_info.minor) in corpus.name
    assert data.load_corpus().fingerprint == corpus.fingerprint  # deterministic


def test_tokenizer_is_byte_level_exact_and_sized(tokenizer, corpus):
    assert len(tokenizer) == 512
    held_out = corpus.eval_documents[0][:2000] + " ünïcödé ✓"
    ids = tokenizer(held_out)["input_ids"]
    assert tokenizer.decode(ids) == held_out
    assert tokenizer.eos_token == data.EOS_TOKEN and tokenizer.pad_token_id == tokenizer.eos_token_id
    # BPE compresses: well under one token per byte on held-out code (bytes alone would be ≥ 1.0). Measured over
    # several files, since the stdlib's sources (and so the held-out files) differ between Python builds.
    sample = "".join(document[:2000] for document in corpus.eval_documents[:20])
    assert len(tokenizer(sample)["input_ids"]) < 0.7 * len(sample.encode())


def test_tokenizer_training_is_deterministic(corpus, tmp_path):
    first = data.get_tokenizer(300, corpus=corpus, cache_dir=tmp_path / "one")
    second = data.get_tokenizer(300, corpus=corpus, cache_dir=tmp_path / "two")
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()


def test_tokenizer_is_loaded_from_the_cache(cache_dir, corpus, tokenizer, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(data, "train_bpe_tokenizer", fail)
    again = data.get_tokenizer(512, corpus=corpus)
    assert again.backend_tokenizer.to_str() == tokenizer.backend_tokenizer.to_str()
    assert any((cache_dir / "tokenizers").iterdir())


def test_blocks_are_the_corpus_tokens_in_order(tokenizer, corpus):
    import datasets

    train_ds, eval_ds = data.build_datasets(tokenizer, 32, dataset=corpus, max_train_tokens=1000, max_eval_tokens=100)
    assert isinstance(train_ds, datasets.Dataset) and isinstance(eval_ds, datasets.Dataset)
    assert (len(train_ds), len(eval_ds)) == (1000 // 32, 100 // 32)
    expected = tokenizer(corpus.train_documents[0])["input_ids"][:64]
    got = torch.cat([train_ds[0]["input_ids"], train_ds[1]["input_ids"]]).tolist()
    assert got == expected
    assert torch.equal(train_ds[3]["labels"], train_ds[3]["input_ids"])
    assert eval_ds[0]["input_ids"].tolist() == tokenizer(corpus.eval_documents[0])["input_ids"][:32]
    # a limit only shortens the data: its blocks are the first blocks of a longer limit (tokenized from more files)
    longer, _ = data.build_datasets(tokenizer, 32, dataset=corpus, max_train_tokens=20_000, max_eval_tokens=100)
    assert len(longer) == 20_000 // 32
    assert torch.equal(longer[: len(train_ds)]["input_ids"], train_ds[:]["input_ids"])


def test_documents_are_packed_with_end_of_text_between_them(tokenizer, tmp_path):
    texts = _texts(2500)
    path = _write_jsonl(tmp_path / "corpus.jsonl", texts)
    corpus = data.load_corpus(str(path), cache_dir=tmp_path / "c")
    train_ds, eval_ds = data.build_datasets(tokenizer, 16, dataset=corpus, cache_dir=tmp_path / "c")
    train_texts = [t for i, t in enumerate(texts) if i % data.EVAL_EVERY != data.EVAL_EVERY - 1]
    expected = _reference_blocks(tokenizer, train_texts, 16, data.PACK_BATCH_DOCUMENTS)
    assert train_ds[:]["input_ids"].tolist() == expected  # two packing batches (1000 + 1000 + 375 documents)
    assert eval_ds[:]["input_ids"].tolist() == _reference_blocks(tokenizer, texts[19::20], 16, 1000)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=4)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (4, 16) and batch["input_ids"].dtype == torch.int64


def test_tokenization_is_cached_by_fingerprint_and_num_proc_does_not_change_blocks(tokenizer, tmp_path, monkeypatch):
    path = _write_jsonl(tmp_path / "corpus.jsonl", _texts(300))
    cache = tmp_path / "c"
    first, _ = data.build_datasets(tokenizer, 16, dataset=str(path), cache_dir=cache)
    two_processes, _ = data.build_datasets(tokenizer, 16, dataset=str(path), cache_dir=tmp_path / "c2", num_proc=2)
    assert torch.equal(two_processes[:]["input_ids"], first[:]["input_ids"])

    def fail(*args, **kwargs):
        raise AssertionError("tokenized again although cached")

    pack = data.pack_table
    monkeypatch.setattr(data, "tokenize_batch", fail)
    monkeypatch.setattr(data, "pack_table", fail)
    again, _ = data.build_datasets(tokenizer, 16, dataset=str(path), cache_dir=cache)
    assert torch.equal(again[:]["input_ids"], first[:]["input_ids"])
    with pytest.raises(AssertionError, match="tokenized again"):  # a new seq_len is packed anew...
        data.build_datasets(tokenizer, 8, dataset=str(path), cache_dir=cache)
    monkeypatch.setattr(data, "pack_table", pack)
    _write_jsonl(path, _texts(300, seed=1))  # ... and so is a changed file
    with pytest.raises(AssertionError, match="tokenized again"):
        data.build_datasets(tokenizer, 16, dataset=str(path), cache_dir=cache)


def test_local_corpora_of_every_format(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [f"document number {i} " * 20 for i in range(40)]
    jsonl = _write_jsonl(tmp_path / "corpus.jsonl", rows)
    corpus = data.load_corpus(str(jsonl))
    assert corpus.eval_documents == [rows[19], rows[39]] and len(corpus.train) == 38
    (tmp_path / "array.json").write_text(json.dumps([{"body": text} for text in rows]))
    assert data.load_corpus(str(tmp_path / "array.json"), text_field="body").eval_documents == [rows[19], rows[39]]
    pq.write_table(pa.table({"content": rows}), tmp_path / "corpus.parquet")
    assert data.load_corpus(str(tmp_path / "corpus.parquet"), text_field="content").train_documents[0] == rows[0]
    folder = tmp_path / "texts"
    folder.mkdir()
    for i, text in enumerate(rows):
        (folder / f"{i:03d}.txt").write_text(text + "\nsecond line\n")
    from_folder = data.load_corpus(str(folder))
    assert from_folder.eval_documents == [rows[19] + "\nsecond line\n", rows[39] + "\nsecond line\n"]
    single = tmp_path / "one.txt"
    single.write_text("word " * 1000)
    one = data.load_corpus(str(single))
    assert one.train_documents[0] + one.eval_documents[0] == "word " * 1000
    assert len(one.eval_documents[0]) == 250


def test_bad_inputs_are_one_line_errors_before_work(tmp_path, tokenizer, monkeypatch):
    def one_line(call, match):
        with pytest.raises(ValueError, match=match) as caught:
            call()
        assert "\n" not in str(caught.value), str(caught.value)

    bad = _write_jsonl(tmp_path / "bad.jsonl", ["x"], field="content")
    one_line(lambda: data.load_corpus(str(bad)), r"no field 'text' \(fields found: \['content', 'id'\]\).*text_field")
    other = tmp_path / "corpus.csv"
    other.write_text("a,b\n")
    one_line(lambda: data.load_corpus(str(other)), r"must end in \.jsonl, \.json, \.parquet, \.txt")
    one_line(lambda: data.load_corpus(str(tmp_path / "missing.jsonl")), "does not exist")
    empty = _write_jsonl(tmp_path / "empty.jsonl", ["", "  \n"])
    one_line(lambda: data.load_corpus(str(empty)), "holds no text")
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    one_line(lambda: data.load_corpus(str(broken)), "could not be read as json")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    one_line(lambda: data.check_dataset("someone/some-hub-dataset"), "HF_HUB_OFFLINE says there is no network")
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a b")
    one_line(
        lambda: data.build_datasets(tokenizer, 64, dataset=str(tiny), cache_dir=tmp_path / "c"), "less than one block"
    )
    one_line(lambda: data.build_datasets(tokenizer, 1, dataset=str(tiny)), "seq_len")


def test_a_hub_name_without_network_is_one_line(monkeypatch):
    import socket

    import datasets

    def no_dns(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(
        ValueError, match=r"needs the network, which this machine lacks \(huggingface.co does not"
    ) as e:
        data.load_corpus("someone/some-hub-dataset", streaming=True)
    assert "\n" not in str(e.value)
    monkeypatch.setattr(data, "_hub_unreachable", lambda: None)  # resolves, but the hub does not answer

    def no_network(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/some-hub-dataset' on the Hub (LocalEntryNotFoundError)\nmore")

    monkeypatch.setattr(datasets, "load_dataset", no_network)
    with pytest.raises(ValueError, match="could not be loaded .*ConnectionError.*check the name and the network") as e:
        data.load_corpus("someone/some-hub-dataset", streaming=True)
    assert "\n" not in str(e.value)


# ---- streaming ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_file(tmp_path_factory):
    return _write_jsonl(tmp_path_factory.mktemp("stream") / "corpus.jsonl", _texts(400, seed=2))


def _stream(tokenizer, path, **kwargs):
    corpus = data.load_corpus(str(path), streaming=True, stream_eval_documents=20)
    return data.build_datasets(tokenizer, 16, dataset=corpus, streaming=True, **kwargs)


def _blocks(stream, count):
    return [block["input_ids"].tolist() for block in itertools.islice(iter(stream), count)]


def test_a_stream_packs_the_documents_after_its_held_out_ones_in_a_seeded_order(tokenizer, stream_file):
    texts = [json.loads(line)["text"] for line in stream_file.read_text().splitlines()]
    train, held_out = _stream(tokenizer, stream_file, seed=3, shuffle_buffer=50)
    assert isinstance(train, torch.utils.data.IterableDataset)
    assert held_out[:]["input_ids"].tolist() == _reference_blocks(tokenizer, texts[:20], 16, 1000)
    expected = _reference_blocks(tokenizer, texts[20:], 16, data.STREAM_PACK_BATCH_DOCUMENTS)
    one_pass = _blocks(train, len(expected))
    assert one_pass != expected and sorted(one_pass) == sorted(expected)  # shuffled, nothing lost or repeated
    second_pass = _blocks(train, 2 * len(expected))[len(expected) :]
    assert sorted(second_pass) == sorted(expected) and second_pass != one_pass  # repeats, reshuffled
    assert _blocks(_stream(tokenizer, stream_file, seed=3, shuffle_buffer=50)[0], 30) == one_pass[:30]
    assert _blocks(_stream(tokenizer, stream_file, seed=4, shuffle_buffer=50)[0], 30) != one_pass[:30]
    limited, _ = _stream(tokenizer, stream_file, seed=3, max_train_tokens=16 * 40)
    assert len(_blocks(limited, 80)) == 80 and len({tuple(b) for b in _blocks(limited, 80)}) <= 40


def test_ranks_stream_disjoint_shares_of_the_blocks(tokenizer, stream_file):
    corpus = data.load_corpus(str(stream_file), streaming=True, stream_eval_documents=20)
    texts = [json.loads(line)["text"] for line in stream_file.read_text().splitlines()][20:]
    everything = _reference_blocks(tokenizer, texts, 16, data.STREAM_PACK_BATCH_DOCUMENTS)[:300]
    for rank in (0, 1):  # one file: not divisible into 2 shards, so every other block
        share = data.stream_blocks(corpus.train, tokenizer, 16, max_tokens=16 * 300, rank=rank, world_size=2)
        assert [row["input_ids"] for row in share] == everything[rank::2]


@pytest.mark.parametrize("consumed", [0, 7, 60, 190])
def test_stream_state_resumes_exactly_despite_read_ahead(tokenizer, stream_file, tmp_path, consumed):
    """Consumed 7 (inside the first buffer fill), 60, 190 (the second pass): read 9 blocks further, save the
    state after ``consumed``; a new stream loaded from it yields exactly the uninterrupted continuation."""
    kwargs = {"seed": 5, "shuffle_buffer": 16}
    uninterrupted = _blocks(_stream(tokenizer, stream_file, **kwargs)[0], 260)
    first, _ = _stream(tokenizer, stream_file, **kwargs)
    blocks = iter(first)
    seen = [next(blocks)["input_ids"].tolist() for _ in range(consumed + 9)]
    assert seen == uninterrupted[: consumed + 9]
    data.save_stream_state(first, tmp_path, consumed)
    resumed, _ = _stream(tokenizer, stream_file, **kwargs)
    data.restore_stream_state(resumed, tmp_path)
    assert _blocks(resumed, 260 - consumed) == uninterrupted[consumed:]
    with pytest.raises(ValueError, match="not kept"):
        first.state_dict(consumed + 10_000)


class _RecordingTrainer:
    """A Trainer that records each micro-batch's input ids and exact loss."""

    @staticmethod
    def make(**kwargs):
        from transformers import Trainer

        class Recording(Trainer):
            seen: list = []

            def compute_loss(self, model, inputs, *args, **kw):
                loss = super().compute_loss(model, inputs, *args, **kw)
                self.seen.append((inputs["input_ids"].tolist(), loss.item()))
                return loss

        Recording.seen = []
        return Recording(**kwargs)


def test_a_resumed_streaming_trainer_sees_the_same_batches_and_losses(
    tokenizer, stream_file, tmp_path, one_cpu_thread
):
    from transformers import TrainingArguments

    from hf_pept.models import build_llama

    def run(output_dir, resume=None):
        train, _ = _stream(tokenizer, stream_file, seed=1, shuffle_buffer=32)
        args = TrainingArguments(
            str(output_dir), max_steps=8, per_device_train_batch_size=4, gradient_accumulation_steps=2,
            learning_rate=3e-3, lr_scheduler_type="cosine", save_steps=4, logging_steps=1, report_to=[],
            use_cpu=True, disable_tqdm=True, seed=0, ignore_data_skip=True, dataloader_num_workers=0,
        )  # fmt: skip
        model = build_llama("tiny", len(tokenizer), max_position_embeddings=16, seed=0)
        trainer = _RecordingTrainer.make(
            model=model, args=args, train_dataset=train, callbacks=[data.StreamStateCallback(train)]
        )
        if resume:
            data.restore_stream_state(train, resume)
        trainer.train(resume_from_checkpoint=resume)
        return trainer.seen

    uninterrupted = run(tmp_path / "a")
    assert len(uninterrupted) == 16
    checkpoint = tmp_path / "a" / "checkpoint-4"
    assert (checkpoint / data.STREAM_STATE_FILE).is_file()
    resumed = run(tmp_path / "b", resume=str(checkpoint))
    assert [ids for ids, _ in resumed] == [ids for ids, _ in uninterrupted[8:]]
    assert [loss for _, loss in resumed] == [loss for _, loss in uninterrupted[8:]]  # exactly


def test_hf_pept_train_streaming_resumes_on_the_uninterrupted_loss_curve(cache_dir, stream_file, tmp_path):
    from hf_pept.cli import main

    common = [
        "--dataset", str(stream_file), "--streaming", "--model", "tiny", "--vocab_size", "300", "--seq_len", "16",
        "--batch_size", "2", "--max_steps", "6", "--save_steps", "3", "--eval_steps", "0", "--logging_steps", "1",
        "--max_eval_tokens", "128", "--method", "full",
    ]  # fmt: skip
    assert main(["train", *common, "--output_dir", str(tmp_path / "a")]) == 0
    checkpoint = tmp_path / "a" / "checkpoint-3"
    resumed_dir = tmp_path / "b"
    assert main(["train", *common, "--output_dir", str(resumed_dir), "--resume_from_checkpoint", str(checkpoint)]) == 0

    def losses(run_dir):
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in records if "loss" in r}

    whole, resumed = losses(tmp_path / "a"), losses(resumed_dir)
    assert [resumed[step] for step in (4, 5, 6)] == [whole[step] for step in (4, 5, 6)]
    with pytest.raises(ValueError, match="holds no stream_state.pt"):
        data.restore_stream_state(None, tmp_path)


def test_a_stream_too_short_for_its_splits_is_a_clear_error(tokenizer, tmp_path):
    long, short = "alpha beta gamma delta " * 40, "a"
    path = _write_jsonl(tmp_path / "corpus.jsonl", [long] * 20 + [short] * 5)
    corpus = data.load_corpus(str(path), streaming=True, stream_eval_documents=20)
    with pytest.raises(ValueError, match="training split .* holds less than one block of seq_len=64"):
        data.build_datasets(tokenizer, 64, dataset=corpus, streaming=True)
    with pytest.raises(ValueError, match="holds only 20 documents, all taken by the held-out split"):
        data.load_corpus(
            str(_write_jsonl(tmp_path / "short.jsonl", [long] * 20)), streaming=True, stream_eval_documents=20
        )
    with pytest.raises(ValueError, match="needs a streamed corpus"):
        data.build_datasets(tokenizer, 64, dataset=data.load_corpus(str(path)), streaming=True)
