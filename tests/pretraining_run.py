"""The seeded short pre-training run on the built-in corpus that method-comparison tests share: data and
TrainingArguments (batch 8 × 32 tokens, one pass over the data, cosine schedule with 10 % warm-up, β₂ = 0.95)."""

from transformers import TrainingArguments

from hf_pept.data import build_datasets, get_tokenizer

BATCH, SEQ_LEN = 8, 32


def builtin_corpus(steps: int):
    """(tokenizer, train, held_out): enough training tokens for ``steps`` batches, 8192 held-out tokens."""
    tokenizer = get_tokenizer(vocab_size=512)
    train, held_out = build_datasets(
        tokenizer, seq_len=SEQ_LEN, max_train_tokens=steps * BATCH * SEQ_LEN + 1000, max_eval_tokens=8192
    )
    return tokenizer, train, held_out


def pretraining_args(output_dir, steps: int, learning_rate: float, **overrides) -> TrainingArguments:
    kwargs = {
        "max_steps": steps,
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": 64,
        "learning_rate": learning_rate,
        "lr_scheduler_type": "cosine",
        "warmup_steps": steps // 10,
        "adam_beta2": 0.95,
        "logging_steps": steps,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return TrainingArguments(str(output_dir), **{**kwargs, **overrides})
