"""In-place C ← β·C + α·A B as one Triton GEMM whose epilogue reads and rewrites C (no full-size temporary).

Shared by the GaLore back-projection (``galore_update_triton``: W ← (1 − ηλ)W − ηα·P N) and the LoRA merge
(``lora_merge_triton``: W ← W + (α/r)·B A). In both the inner dimension K is a rank (1 … ~1024) while C is a full
weight, so the kernel is bound by one read and one write of C; it tiles C, loops over K with fp32 accumulation and
rounds once to C's dtype.

Factors of any float dtype are read as they are and cast in registers to the *compute dtype* (C's dtype for
bf16/fp16 weights, matching ``addmm`` on factors cast to the weight dtype; fp32 for fp32 weights). fp32 products use
IEEE fp32 unless ``torch.get_float32_matmul_precision()`` allows TF32, as cuBLAS does for ``torch.addmm``.

Tile sizes are fixed per (dtype, K) rather than autotuned: autotuning may pick different tiles on different
data-parallel ranks, and a different K-blocking changes the rounding, which would let replicas drift apart.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import interpreting


@triton.jit
def _addmm_epilogue_kernel(
    c_ptr,
    a_ptr,
    b_ptr,
    M,
    N,
    K,
    stride_cm,
    stride_cn,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    beta,
    alpha,
    COMPUTE_DTYPE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    UPCAST_DOT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    # Grouped ordering: GROUP_M row-tiles share their B columns while they are still in L2.
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m

    offs_m = pid_m.to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n.to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + offs_k
        a = tl.load(
            a_ptr + offs_m[:, None] * stride_am + k[None, :] * stride_ak,
            mask=mask_m[:, None] & (k[None, :] < K),
            other=0.0,
        )
        b = tl.load(
            b_ptr + k[:, None] * stride_bk + offs_n[None, :] * stride_bn,
            mask=(k[:, None] < K) & mask_n[None, :],
            other=0.0,
        )
        a = a.to(COMPUTE_DTYPE)
        b = b.to(COMPUTE_DTYPE)
        if UPCAST_DOT:
            # Triton's CPU interpreter mis-computes bf16/fp16 dots; products of bf16/fp16 values are exact in
            # fp32, so an fp32 dot of the rounded factors gives the tensor-core result up to summation order.
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)

    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    c_mask = mask_m[:, None] & mask_n[None, :]
    c = tl.load(c_ptrs, mask=c_mask, other=0.0).to(tl.float32)
    out = beta * c + alpha * acc
    tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=c_mask)


_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _tile_config(dtype: torch.dtype, K: int) -> dict[str, int]:
    if interpreting():
        # Small tiles so that the CPU tests cover several tiles, partial edge tiles and a multi-step K loop.
        return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 16, "GROUP_M": 2, "num_warps": 4, "num_stages": 1}
    block_k = 16 if K <= 16 else 32 if K <= 32 else 64
    if dtype == torch.float32:
        return {
            "BLOCK_M": 64,
            "BLOCK_N": 128,
            "BLOCK_K": min(block_k, 32),
            "GROUP_M": 8,
            "num_warps": 8,
            "num_stages": 3,
        }
    return {"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": block_k, "GROUP_M": 8, "num_warps": 8, "num_stages": 3}


def addmm_epilogue_(
    c: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    beta: float,
    alpha: float,
    compute_dtype: torch.dtype | None = None,
) -> None:
    """C ← β·C + α·A B in place (C: M×N, A: M×K, B: K×N; any strides), fp32 accumulation, one rounding to C.

    ``compute_dtype`` (default: C's dtype) is the dtype the factors are rounded to before the product. An fp32
    product into an fp32 C is IEEE fp32 unless torch allows TF32 matmuls; into a bf16/fp16 C it may use TF32, whose
    10-bit mantissa is finer than the 7/10 bits C keeps.
    """
    if c.dim() != 2 or a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"addmm_epilogue_ needs 2-D tensors, got {tuple(c.shape)}, {tuple(a.shape)}, {tuple(b.shape)}"
        )
    M, N = c.shape
    K = a.shape[1]
    if a.shape[0] != M or b.shape != (K, N):
        raise ValueError(f"shapes do not chain: C {tuple(c.shape)} = A {tuple(a.shape)} · B {tuple(b.shape)}")
    if c.dtype not in _TL_DTYPES:
        raise ValueError(f"C must be float32, bfloat16 or float16, got {c.dtype}")
    if M == 0 or N == 0:
        return
    compute_dtype = c.dtype if compute_dtype is None else compute_dtype
    if compute_dtype not in _TL_DTYPES:
        raise ValueError(f"compute_dtype must be float32, bfloat16 or float16, got {compute_dtype}")
    exact_fp32 = c.dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest"
    precision = "ieee" if exact_fp32 or interpreting() else "tf32"
    config = _tile_config(compute_dtype, K)
    grid = (triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"]),)
    _addmm_epilogue_kernel[grid](
        c,
        a,
        b,
        M,
        N,
        K,
        c.stride(0),
        c.stride(1),
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        float(beta),
        float(alpha),
        COMPUTE_DTYPE=_TL_DTYPES[compute_dtype],
        INPUT_PRECISION=precision,
        UPCAST_DOT=interpreting() and compute_dtype != torch.float32,
        **config,
    )
