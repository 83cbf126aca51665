"""Tiny models and data for the SwitchLoRA tests (the ReLoRA tests' tiny LLaMA and token rows)."""

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parents[1] / "relora"))
from relora_helpers import tiny_llama, token_dataset  # noqa: E402

__all__ = ["OneLinear", "tiny_llama", "token_dataset"]


class OneLinear(nn.Module):
    """One adaptable linear (``proj``, 12 in → 10 out): small enough to follow every entry."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.proj = nn.Linear(12, 10)

    def forward(self, x):
        return self.proj(x)
