"""Perplexity against a hand-computed token NLL and evaluate's perplexity metric; metrics.jsonl records, events and exact
resume."""

import json
import math
import os

import pytest
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

import hf_pept  # noqa: F401  (registers galore_adamw)
from hf_pept.events import record_event
from hf_pept.metrics import METRICS_FILE, MetricsCallback, perplexity, unwrap_optimizer
from hf_pept.models import build_llama

VOCAB, SEQ = 97, 16


class RandomBlocks(Dataset):
    def __init__(self, n, seed):
        generator = torch.Generator().manual_seed(seed)
        self.blocks = torch.randint(0, VOCAB, (n, SEQ), generator=generator)

    def __len__(self):
        return len(self.blocks)

    def __getitem__(self, i):
        return {"input_ids": self.blocks[i], "labels": self.blocks[i].clone()}


def _args(tmp_path, **kwargs):
    defaults = {
        "max_steps": 6,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "learning_rate": 1e-2,
        "logging_steps": 2,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return TrainingArguments(str(tmp_path), **{**defaults, **kwargs})


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_perplexity_is_exp_of_the_mean_token_nll(tmp_path):
    model = build_llama("tiny", VOCAB, max_position_embeddings=SEQ, seed=0)
    eval_ds = RandomBlocks(5, seed=1)  # batches of 2, 2, 1: the mean must weight by tokens, not by batch
    trainer = Trainer(model=model, args=_args(tmp_path), eval_dataset=eval_ds)
    eval_loss = trainer.evaluate()["eval_loss"]
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(len(eval_ds)):
            ids = eval_ds[i]["input_ids"][None]
            logits = model(input_ids=ids).logits[0, :-1]
            total += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            count += SEQ - 1
    assert perplexity(eval_loss) == pytest.approx(math.exp(total / count), rel=1e-5)
    assert perplexity(1e6) == math.inf


class MarkAtStep(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 3:
            record_event(state, "relora_merge", merged_layers=7)


def test_metrics_file_has_training_eval_and_event_records(tmp_path):
    model = build_llama("tiny", VOCAB, max_position_embeddings=SEQ, seed=0)
    args = _args(
        tmp_path,
        optim="galore_adamw",
        optim_target_modules=["q_proj", "up_proj"],
        optim_args="rank=8,update_proj_gap=4,scale=0.25",
        eval_strategy="steps",
        eval_steps=3,
    )
    callback = MetricsCallback(tmp_path)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=RandomBlocks(32, seed=2),
        eval_dataset=RandomBlocks(4, seed=3),
        callbacks=[callback, MarkAtStep()],
    )
    trainer.train()
    records = _read(tmp_path / METRICS_FILE)
    train = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval_loss" in r]
    events = [r for r in records if "event" in r]
    assert [r["step"] for r in train] == [2, 4, 6]
    for r in train:
        assert {"lr", "grad_norm", "epoch", "peak_memory_mb"} <= set(r) and r["peak_memory_mb"] > 0
    assert all(r["tokens_per_second"] > 0 for r in train)
    assert [r["step"] for r in evals] == [3, 6]
    assert all(r["eval_perplexity"] == pytest.approx(math.exp(r["eval_loss"])) for r in evals)
    assert [(r["event"], r["step"]) for r in events if r["event"] == "relora_merge"] == [("relora_merge", 3)]
    # GaLore refreshes its projectors at steps 1 and 1 + T (T = update_proj_gap = 4), drained from the optimizer.
    assert [r["step"] for r in events if r["event"] == "projector_update"] == [1, 5]
    assert callback.summary["eval_perplexity"] == pytest.approx(evals[-1]["eval_perplexity"])
    assert callback.summary["optimizer_state_mb"] > 0
    assert unwrap_optimizer(trainer.optimizer) is not trainer.optimizer


def test_an_evaluation_after_training_leaves_the_training_time_alone(tmp_path):
    """The runner evaluates once more after ``train()`` when the schedule did not end on an evaluation; that
    evaluation used to count as a pause inside training, so a long one made the training time negative."""
    import time

    trainer = Trainer(
        model=build_llama("tiny", VOCAB, max_position_embeddings=SEQ, seed=0),
        args=_args(tmp_path, max_steps=2),
        train_dataset=RandomBlocks(8, seed=2),
        eval_dataset=RandomBlocks(2, seed=3),
        callbacks=[callback := MetricsCallback(tmp_path)],
    )
    trainer.train()
    trained = dict(callback.summary)
    time.sleep(2 * trained["train_seconds"])  # stands for an evaluation longer than the training
    callback.on_evaluate(trainer.args, trainer.state, trainer.control)
    summary = callback.finalize(trainer.state, trainer.optimizer)
    assert summary["train_seconds"] == trained["train_seconds"] > 0
    assert summary["tokens_per_second"] == trained["tokens_per_second"] > 0


def test_resumed_run_continues_the_same_records(tmp_path):
    def run(output_dir, max_steps, resume=None):
        model = build_llama("tiny", VOCAB, max_position_embeddings=SEQ, seed=0)
        args = _args(
            output_dir,
            max_steps=max_steps,
            logging_steps=1,
            save_strategy="steps",
            save_steps=3,
            lr_scheduler_type="constant",  # the same LR at every step, whatever max_steps
        )
        trainer = Trainer(
            model=model, args=args, train_dataset=RandomBlocks(32, seed=2), callbacks=[MetricsCallback(output_dir)]
        )
        trainer.train(resume_from_checkpoint=resume)
        return [(r["step"], r["loss"]) for r in _read(output_dir / METRICS_FILE) if "loss" in r]

    straight = run(tmp_path / "straight", 6)
    interrupted = tmp_path / "interrupted"
    run(interrupted, 5)  # wrote records 4 and 5 after checkpoint-3: a resume from 3 must drop them
    resumed = run(interrupted, 6, resume=str(interrupted / "checkpoint-3"))
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5, 6]
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in straight], rel=1e-5)


def _reference_perplexities(model_dir, sequences):
    """Per-text perplexity as evaluate's perplexity metric documents it, written independently: the model loaded
    from its folder, logits of each text, exp(mean over its predicted tokens of -log_softmax[next token]) (no start
    token added, no padding: one text per forward pass)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for ids in sequences:
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            log_probs = torch.log_softmax(logits[:-1], dim=-1)
            nll = -log_probs.gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
            out.append(math.exp(nll.mean().item()))
    return out


def test_perplexity_matches_an_independent_per_text_computation_on_a_saved_model(tmp_path):
    """Our perplexity (of the Trainer's eval_loss) per text and over packed held-out blocks, against the reference
    above within 1e-5 relative (float32 logits)."""
    import datasets

    from hf_pept import data

    texts = [f"def f{i}(x):\n    return x * {i} + {i % 7}\n" * (1 + i % 4) for i in range(60)]
    tokenizer = data.train_bpe_tokenizer(texts, 300)
    model_dir = tmp_path / "model"
    build_llama("tiny", len(tokenizer), max_position_embeddings=128, seed=0).save_pretrained(model_dir)
    from transformers import AutoModelForCausalLM

    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(model_dir), args=_args(tmp_path, per_device_eval_batch_size=4)
    )

    sequences = [tokenizer(text)["input_ids"] for text in texts[:5]]  # different lengths
    ours = []
    for ids in sequences:
        one = datasets.Dataset.from_dict({"input_ids": [ids], "labels": [ids]}).with_format("torch")
        ours.append(perplexity(trainer.evaluate(eval_dataset=one)["eval_loss"]))
    reference = _reference_perplexities(model_dir, sequences)
    assert ours == pytest.approx(reference, rel=1e-5)
    assert len(set(round(p, 3) for p in reference)) == len(reference)  # the texts differ: the check can fail

    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    _, held_out = data.build_datasets(tokenizer, 32, dataset=str(path), cache_dir=tmp_path / "cache")
    blocks = held_out[:]["input_ids"].tolist()
    assert len(blocks) > 1
    per_block_nll = [math.log(p) for p in _reference_perplexities(model_dir, blocks)]
    expected = math.exp(sum(per_block_nll) / len(per_block_nll))  # equal-length blocks: the mean token NLL
    assert perplexity(trainer.evaluate(eval_dataset=held_out)["eval_loss"]) == pytest.approx(expected, rel=1e-5)


EVALUATE_SCRIPT_ENV = "HF_PEPT_EVALUATE_PERPLEXITY"


def _evaluate_perplexity_metric():
    """evaluate's perplexity metric: from the local script named by $HF_PEPT_EVALUATE_PERPLEXITY (a copy of
    metrics/perplexity/perplexity.py, for running this check offline; a failure to load it is an error), else from
    the Hugging Face Hub, skipping the test when evaluate is missing or the Hub cannot be reached."""
    evaluate = pytest.importorskip("evaluate", reason="the evaluate library is not installed (the `test` extra)")
    script = os.environ.get(EVALUATE_SCRIPT_ENV)
    if script:
        return evaluate.load(script)
    try:
        return evaluate.load("perplexity", module_type="metric")
    except Exception as err:  # the metric is a script on the Hub, not part of the wheel
        pytest.skip(
            f"evaluate's perplexity metric could not be loaded from the Hugging Face Hub ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); set {EVALUATE_SCRIPT_ENV} to a local copy of "
            "metrics/perplexity/perplexity.py to run this check offline"
        )


@pytest.mark.parametrize("add_start_token", [True, False])
def test_perplexity_matches_the_evaluate_librarys_metric_on_a_saved_model(tmp_path, cache_dir, add_start_token):
    """Our perplexity per text against evaluate's perplexity metric, on a saved tiny LLaMA and its tokenizer (one
    folder, the metric's ``model_id``) and held-out texts of the built-in corpus, within 1e-5 relative.

    evaluate tokenizes each text without special tokens, truncates it to ``max_length`` tokens (``max_length - 1``
    when it adds a start token), prepends the tokenizer's BOS when ``add_start_token``, runs the texts in batches
    right-padded with the pad token under an attention mask, and returns per text exp(mean NLL of its predicted,
    unpadded tokens) plus ``mean_perplexity``, the plain mean of those. Ours is exp of the Trainer's ``eval_loss``
    (the mean token NLL), here of each text alone as the same token sequence (BOS prepended and truncated the same
    way; no padding, batch size 1). They agree because both average the NLL over the same predicted tokens, and
    right padding with causal attention leaves the logits of the real tokens unchanged. Our tokenizer's BOS and pad
    token are its end-of-text token. Both run on the CPU in float32; they differed by at most 1.4e-6 relative."""
    import datasets

    from hf_pept import data
    from hf_pept.models import build_model

    metric = _evaluate_perplexity_metric()
    corpus = data.load_corpus()
    tokenizer = data.get_tokenizer(300, corpus=corpus)
    max_length = 48
    model_dir = tmp_path / "model"
    # initializer_range 0.2 (not 0.02): logits far from uniform, so the per-token NLLs differ and a token counted
    # differently would show
    model = build_model("tiny", len(tokenizer), max_position_embeddings=max_length, seed=0, initializer_range=0.2)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    documents = [text for text in corpus.eval_documents if len(text) > 4000][::6][:4]
    # Pieces from the middle of four held-out files (their openings are often the same licence header), of
    # different lengths: the shorter ones are padded in their batch, the longest is truncated.
    texts = [document[2000 : 2000 + chars] for document, chars in zip(documents, (12, 30, 60, 2000))]
    results = metric.compute(
        model_id=str(model_dir),
        predictions=texts,
        batch_size=3,  # a padded batch of three, then one text alone
        add_start_token=add_start_token,
        max_length=max_length,
        device="cpu",
    )

    from transformers import AutoModelForCausalLM

    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(model_dir), args=_args(tmp_path))
    start = [tokenizer.bos_token_id] if add_start_token else []
    sequences = [
        start + tokenizer(text, add_special_tokens=False)["input_ids"][: max_length - len(start)] for text in texts
    ]
    assert len({len(ids) for ids in sequences}) == len(sequences) == 4 and len(sequences[-1]) == max_length
    ours = []
    for ids in sequences:
        one = datasets.Dataset.from_dict({"input_ids": [ids], "labels": [ids]}).with_format("torch")
        ours.append(perplexity(trainer.evaluate(eval_dataset=one)["eval_loss"]))
    assert ours == pytest.approx(results["perplexities"], rel=1e-5)
    assert sum(ours) / len(ours) == pytest.approx(results["mean_perplexity"], rel=1e-5)
    assert len({round(p, 3) for p in ours}) == len(ours)  # the texts differ: the check can fail
