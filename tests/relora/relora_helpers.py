"""Tiny models and data for the ReLoRA tests (the tuners' shared tiny LLaMA and token rows)."""

from tuner_helpers import tiny_llama, token_dataset

__all__ = ["tiny_llama", "token_dataset"]
