"""Choosing between a Triton kernel and its PyTorch reference."""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import warnings
from collections.abc import Callable

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


@functools.cache
def triton_op(module: str, name: str) -> Callable | None:
    """The launcher ``name`` of the Triton module ``hf_pept.kernels.<module>``, or None when it cannot be imported.

    A Triton install that is missing or broken must never stop training: the caller then runs the reference
    (one warning per op says so).
    """
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    except Exception as error:  # noqa: BLE001 - any import failure of an optional accelerator means "use the reference"
        warnings.warn(
            f"hf_pept.kernels: Triton kernel {module}.{name} unavailable ({type(error).__name__}: {error}); "
            "using the PyTorch reference.",
            stacklevel=3,
        )
        return None
