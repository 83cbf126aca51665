"""Tiny models and data for the SwitchLoRA tests (the tuners' shared tiny LLaMA and token rows)."""

import torch
from torch import nn
from tuner_helpers import tiny_llama, token_dataset

__all__ = ["OneLinear", "tiny_llama", "token_dataset"]


class OneLinear(nn.Module):
    """One adaptable linear (``proj``, 12 in → 10 out): small enough to follow every entry."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(12, 10)

    def forward(self, x):
        return self.proj(x)
