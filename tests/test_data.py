"""Built-in corpus, BPE tokenizer and token blocks, checked against independent re-computations."""

import json
import sys

import pytest
import torch

from hf_pept import data


@pytest.fixture(scope="module")
def corpus():
    return data.load_corpus()


@pytest.fixture(scope="module")
def tokenizer(cache_dir, corpus):
    return data.get_tokenizer(512, corpus=corpus)


def test_builtin_files_are_sorted_sources_without_tests(tmp_path):
    for relative in ("b.py", "a/z.py", "a/test/t.py", "tests/u.py", "site-packages/p.py", "c.txt", "a/b/c.py"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("x = 1\n")
    found = [p.relative_to(tmp_path).as_posix() for p in data.builtin_files(tmp_path)]
    assert found == ["a/b/c.py", "a/z.py", "b.py"]


def test_builtin_corpus_is_the_stdlib_with_a_file_level_held_out_split(corpus):
    files = data.builtin_files()
    assert "os.py" in {p.name for p in files}
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in files]
    nonempty = [text for text in texts if text.strip()]
    assert corpus.eval_documents == nonempty[data.EVAL_EVERY - 1 :: data.EVAL_EVERY]
    assert len(corpus.train_documents) + len(corpus.eval_documents) == len(nonempty)
    assert not set(corpus.eval_documents) & set(corpus.train_documents) - {""}
    assert str(sys.version_info.minor) in corpus.name


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
    train_ds, eval_ds = data.build_datasets(tokenizer, 32, dataset=corpus, max_train_tokens=1000, max_eval_tokens=100)
    assert (len(train_ds), len(eval_ds)) == (1000 // 32, 100 // 32)
    expected = tokenizer(corpus.train_documents[0])["input_ids"][:64]
    got = torch.cat([train_ds[0]["input_ids"], train_ds[1]["input_ids"]]).tolist()
    assert got == expected
    assert torch.equal(train_ds[3]["labels"], train_ds[3]["input_ids"])
    assert eval_ds[0]["input_ids"].tolist() == tokenizer(corpus.eval_documents[0])["input_ids"][:32]


def test_documents_are_separated_by_end_of_text(tokenizer, tmp_path):
    (tmp_path / "a.txt").write_text("alpha beta")
    (tmp_path / "b.txt").write_text("gamma delta")
    tokens = data.tokenize_documents(tokenizer, ["alpha beta", "gamma delta"]).tolist()
    expected = (
        tokenizer("alpha beta")["input_ids"]
        + [tokenizer.eos_token_id]
        + tokenizer("gamma delta")["input_ids"]
        + [tokenizer.eos_token_id]
    )
    assert tokens == expected


def test_local_jsonl_and_txt_corpora(tmp_path):
    rows = [{"text": f"document number {i} " * 20} for i in range(40)]
    path = tmp_path / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    corpus = data.load_corpus(str(path))
    assert corpus.eval_documents == [rows[19]["text"], rows[39]["text"]]
    assert len(corpus.train_documents) == 38
    single = tmp_path / "one.txt"
    single.write_text("word " * 1000)
    one = data.load_corpus(str(single))
    assert one.train_documents[0] + one.eval_documents[0] == "word " * 1000
    assert len(one.eval_documents[0]) == 250


def test_bad_inputs_are_clear_errors(tmp_path, tokenizer, monkeypatch):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"content": "x"}\n')
    with pytest.raises(ValueError, match="text_field"):
        data.load_corpus(str(bad))
    other = tmp_path / "corpus.csv"
    other.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"\.txt or \.jsonl"):
        data.load_corpus(str(other))
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ValueError, match="pip install datasets"):
        data.load_corpus("someone/some-hub-dataset")
    with pytest.raises(ValueError, match="seq_len"):
        data.TokenBlockDataset(torch.arange(10), 1)
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("a b")
    with pytest.raises(ValueError, match="less than one block"):
        data.build_datasets(tokenizer, 64, dataset=str(tiny), cache_dir=tmp_path / "c")
