"""Tiny models and data for the ReLoRA tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM


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
