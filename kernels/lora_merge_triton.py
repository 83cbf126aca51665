"""Triton LoRA merge W ← W + (α/r)·B A in place (contract and math: ``lora_merge.py``).

One GEMM whose epilogue reads W, adds the scaled product accumulated in fp32 and rounds once to W's dtype
(``addmm_epilogue_triton``): W is read and written once, with no fp32 copy of a bf16 weight (the reference makes
one: 2× W's size in extra traffic and a full-size fp32 temporary). The product is taken in fp32 when either factor
is fp32 (as the reference's upcast does) and in the factors' dtype otherwise, where every product is exact in the
fp32 accumulator.

Re-initialising A and zeroing B in the same pass is not done: the factors are r/min(m, n) of W's
size, so it would save under 1 % of the traffic, and drawing A inside the kernel would leave torch's RNG stream,
which keeps re-initialised factors identical on every data-parallel rank and across a resume.
"""

from __future__ import annotations

import torch

from .addmm_epilogue_triton import addmm_epilogue_


def merge_lora_triton(weight: torch.Tensor, lora_A: torch.Tensor, lora_B: torch.Tensor, scaling: float) -> None:
    """Same contract as :func:`~hf_pept.kernels.lora_merge.merge_lora_reference` (shapes checked by the caller)."""
    half = (torch.bfloat16, torch.float16)
    compute_dtype = lora_A.dtype if lora_A.dtype == lora_B.dtype and lora_A.dtype in half else torch.float32
    addmm_epilogue_(weight, lora_B, lora_A, beta=1.0, alpha=scaling, compute_dtype=compute_dtype)
