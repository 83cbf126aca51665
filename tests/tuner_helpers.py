"""Tiny models, data and Trainer arguments shared by the tuners' tests (ReLoRA, SwitchLoRA, SST) and the memory tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments


def tiny_llama(seed: int = 0, vocab_size: int = 128, hidden_size: int = 32, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def token_dataset(n: int = 64, length: int = 16, vocab_size: int = 128, seed: int = 0) -> list[dict]:
    """Sequences with structure to learn (each token is the previous plus a per-row step, mod vocab)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab_size, (n, 1), generator=generator)
    stride = torch.randint(1, 4, (n, 1), generator=generator)
    tokens = (start + stride * torch.arange(length)) % vocab_size
    return [{"input_ids": row, "labels": row} for row in tokens]


def training_args(output_dir, **kwargs) -> TrainingArguments:
    """Short single-process CPU runs: 8 steps of 4 rows at a constant LR 1e-2, logging every step, no saving."""
    defaults = {
        "max_steps": 8,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return TrainingArguments(output_dir, **{**defaults, **kwargs})


def saved_activation_bytes(model, ids) -> int:
    """Bytes of the tensors autograd saves for backward (parameters excluded), each storage counted once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(saved.values())
