"""Choosing between a Triton kernel and its PyTorch reference."""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

DISABLE_ENV = "HF_PEPT_DISABLE_KERNELS"
INTERPRET_ENV = "TRITON_INTERPRET"


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``), as the CPU tests do."""
    return os.environ.get(INTERPRET_ENV, "0") == "1"


def kernels_enabled(tensor: torch.Tensor) -> bool:
    """Whether ops on ``tensor`` should run the Triton kernel rather than the PyTorch reference.

    Kernels run on CUDA tensors when Triton is installed; ``HF_PEPT_DISABLE_KERNELS=1`` forces the reference.
    (CPU tests call the Triton launchers directly under ``TRITON_INTERPRET=1``; the dispatcher never sends
    CPU tensors to the interpreter, which would make every CPU training run crawl.)
    """
    if os.environ.get(DISABLE_ENV, "0") == "1" or not triton_available():
        return False
    return tensor.is_cuda
