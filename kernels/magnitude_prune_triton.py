"""Exact magnitude pruning without a sort: radix select on the bit pattern of |x| (contract: ``magnitude_prune.py``).

For non-negative IEEE floats the bit pattern, read as an integer, orders like the value, so the k-th smallest
magnitude is found digit by digit (Alabi et al. 2012, "Fast k-selection algorithms for graphics processing units",
radix select): |x| as fp32 has 31 significant bits, taken as three digits of 11, 10 and 10 bits. Each pass builds a
histogram of the current digit over the entries whose higher digits match the prefix selected so far, and a
one-program kernel picks the bin holding the k-th smallest (cumulative count ≥ k) and subtracts the entries below
it. After three passes the threshold τ is the exact k-th smallest magnitude and ``k_left`` is how many entries
equal to τ must still be zeroed. Two more passes resolve those ties as the reference does, lowest flat index
first: per-block counts of |x| = τ, an exclusive prefix sum over blocks, and a final pass that zeroes |x| < τ and
the first ``k_left`` ties in index order. Six reads of the tensor and one sparse write, no sort, no host sync.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .dispatch import interpreting
from .magnitude_prune import check_prune_ratio

# (shift, bits) of the three radix digits of the 31-bit pattern of |x| (the sign bit is cleared).
_DIGITS = ((20, 11), (10, 10), (0, 10))


@triton.jit
def _magnitude_bits(x_ptr, offs, mask):
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    return tl.abs(x).to(tl.int32, bitcast=True)


@triton.jit
def _digit_histogram_kernel(
    x_ptr,
    numel,
    hist_ptr,
    state_ptr,
    SHIFT: tl.constexpr,
    DIGIT_BITS: tl.constexpr,
    FIRST: tl.constexpr,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    bits = _magnitude_bits(x_ptr, offs, mask)
    if not FIRST:
        # Only entries whose higher digits equal the prefix chosen by the previous passes are still candidates.
        prefix = tl.load(state_ptr).to(tl.int32)
        mask = mask & ((bits >> (SHIFT + DIGIT_BITS)) == prefix)
    digit = (bits >> SHIFT) & ((1 << DIGIT_BITS) - 1)
    counts = tl.histogram(digit, 1 << DIGIT_BITS, mask=mask)
    bins = tl.arange(0, 1 << DIGIT_BITS)
    tl.atomic_add(hist_ptr + bins, counts.to(tl.int64), mask=counts > 0)


@triton.jit
def _select_bin_kernel(hist_ptr, state_ptr, NUM_BINS: tl.constexpr, DIGIT_BITS: tl.constexpr):
    # state = [prefix, k_left]: the k_left-th smallest candidate lies in the first bin whose cumulative count
    # reaches k_left; the entries of the bins before it are all smaller and leave the count.
    counts = tl.load(hist_ptr + tl.arange(0, NUM_BINS))
    cumulative = tl.cumsum(counts, 0)
    prefix = tl.load(state_ptr)
    k_left = tl.load(state_ptr + 1)
    below = cumulative < k_left
    chosen = tl.sum(below.to(tl.int64), 0)
    smaller = tl.sum(tl.where(below, counts, 0), 0)
    tl.store(state_ptr, (prefix << DIGIT_BITS) | chosen)
    tl.store(state_ptr + 1, k_left - smaller)


@triton.jit
def _tie_count_kernel(x_ptr, numel, state_ptr, block_ties_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    bits = _magnitude_bits(x_ptr, offs, mask)
    threshold = tl.load(state_ptr).to(tl.int32)
    tl.store(block_ties_ptr + pid, tl.sum((mask & (bits == threshold)).to(tl.int64), 0))


@triton.jit
def _prune_kernel(x_ptr, numel, state_ptr, ties_before_ptr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    bits = _magnitude_bits(x_ptr, offs, mask)
    threshold = tl.load(state_ptr).to(tl.int32)
    ties_to_prune = tl.load(state_ptr + 1)
    tie = mask & (bits == threshold)
    # Rank of each tie among all ties in flat-index order: ties in earlier blocks + inclusive scan in this block.
    tie_rank = tl.load(ties_before_ptr + pid) + tl.cumsum(tie.to(tl.int64), 0) - 1
    prune = mask & ((bits < threshold) | (tie & (tie_rank < ties_to_prune)))
    tl.store(x_ptr + offs, tl.zeros([BLOCK], dtype=x_ptr.dtype.element_ty), mask=prune)


def _prune_contiguous(flat: torch.Tensor, k: int) -> None:
    numel = flat.numel()
    block = 128 if interpreting() else 4096
    grid = (triton.cdiv(numel, block),)
    state = torch.tensor([0, k], dtype=torch.int64, device=flat.device)
    hists = torch.zeros(sum(1 << bits for _, bits in _DIGITS), dtype=torch.int64, device=flat.device)
    start = 0
    for index, (shift, bits) in enumerate(_DIGITS):
        hist = hists[start : start + (1 << bits)]
        start += 1 << bits
        _digit_histogram_kernel[grid](
            flat, numel, hist, state, SHIFT=shift, DIGIT_BITS=bits, FIRST=index == 0, BLOCK=block, num_warps=8
        )
        _select_bin_kernel[(1,)](hist, state, NUM_BINS=1 << bits, DIGIT_BITS=bits, num_warps=4)
    block_ties = torch.empty(grid[0], dtype=torch.int64, device=flat.device)
    _tie_count_kernel[grid](flat, numel, state, block_ties, BLOCK=block, num_warps=8)
    ties_before = block_ties.cumsum(0).sub_(block_ties)
    _prune_kernel[grid](flat, numel, state, ties_before, BLOCK=block, num_warps=8)


def magnitude_prune_triton(tensor: torch.Tensor, prune_ratio: float) -> int:
    """Same contract as :func:`~hf_pept.kernels.magnitude_prune.magnitude_prune_reference`."""
    check_prune_ratio(prune_ratio)
    if tensor.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"magnitude_prune_triton supports float32, bfloat16 and float16, got {tensor.dtype}")
    numel = tensor.numel()
    k = round(prune_ratio * numel)
    if k == 0:
        return 0
    if k >= numel:
        tensor.zero_()
        return numel
    if tensor.is_contiguous():
        _prune_contiguous(tensor.view(-1), k)
    else:
        work = tensor.contiguous()
        _prune_contiguous(work.view(-1), k)
        tensor.copy_(work)
    return k
