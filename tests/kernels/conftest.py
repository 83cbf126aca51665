"""Kernel tests: Triton launchers vs their PyTorch references.

Without CUDA the launchers run in Triton's CPU interpreter. ``TRITON_INTERPRET`` is read when ``@triton.jit``
decorates a kernel, so this conftest imports the Triton modules with it set, then restores the environment: only
the tests of this folder (through the ``interpreter`` fixture) run kernels interpreted, the rest of the suite is
untouched. With CUDA the modules are compiled as usual and the ``gpu`` tests use them.
"""

import importlib
import importlib.util
import os
import sys

import pytest
import torch

TRITON_MODULES = (
    "hf_pept.kernels.addmm_epilogue_triton",
    "hf_pept.kernels.galore_update_triton",
    "hf_pept.kernels.lora_merge_triton",
    "hf_pept.kernels.magnitude_prune_triton",
)
HAS_TRITON = importlib.util.find_spec("triton") is not None
INTERPRETED = HAS_TRITON and not torch.cuda.is_available()


def _import_interpreted() -> None:
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for name in TRITON_MODULES:
            module = sys.modules.get(name)
            if module is None:
                importlib.import_module(name)
            else:
                importlib.reload(module)  # decorated earlier without the interpreter: decorate again with it
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    from hf_pept.kernels.dispatch import triton_op

    triton_op.cache_clear()


if INTERPRETED:
    _import_interpreted()


@pytest.fixture
def interpreter(monkeypatch):
    """Run the Triton launchers on CPU tensors in Triton's interpreter (skipped without Triton or with CUDA)."""
    if not HAS_TRITON:
        pytest.skip("needs triton")
    if not INTERPRETED:
        pytest.skip("CUDA present: the Triton modules are compiled, the gpu tests cover them")
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the launchers pick interpreter-sized tiles from it
    yield
