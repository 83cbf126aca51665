"""Optimizer-state pruning for ReLoRA's partial optimizer reset.

ReLoRA (Lialin et al. 2023, arXiv 2307.05695, §3 "Optimizer state reset"): at every merge the Adam moments of
the LoRA factors are pruned — magnitude pruning zeroes the ``p`` fraction of entries with the smallest |m|
(the paper uses p = 0.9), random pruning zeroes each entry with probability ``p`` (p = 0.999).

Contracts (the Triton kernel in ``magnitude_prune_triton.py`` implements the first one exactly):

``magnitude_prune_(tensor, prune_ratio) -> int``
    With n = ``tensor.numel()`` and k = ``round(prune_ratio * n)``: zero, in place, the k entries of smallest
    magnitude and keep the n − k largest untouched. Ties at the threshold are broken by flat (row-major) index:
    among entries equal in magnitude to the k-th smallest, the lowest indices are zeroed first. Works at any size
    (selection by ``kthvalue``, not ``torch.quantile``, which refuses inputs above 2^24 elements). Any floating
    dtype and device; the tensor may be non-contiguous. Returns k, the number of entries zeroed.

``random_prune_(tensor, prune_ratio, generator=None) -> int``
    Zero each entry independently with probability ``prune_ratio`` (the paper's random pruning), drawing from
    ``generator`` (a ``torch.Generator`` on ``tensor``'s device, so that every data-parallel rank holding the same
    state draws the same mask). Returns the number of entries zeroed. PyTorch only: one ``rand`` and one
    ``masked_fill_`` are already memory-bound, a kernel would not pay.
"""

from __future__ import annotations

import torch

from .dispatch import kernels_enabled, triton_op


def check_prune_ratio(prune_ratio: float) -> None:
    if not 0.0 <= prune_ratio <= 1.0:
        raise ValueError(f"prune_ratio must be in [0, 1], got {prune_ratio!r}")


def magnitude_prune_reference(tensor: torch.Tensor, prune_ratio: float) -> int:
    """Zero the ``round(prune_ratio * numel)`` smallest-magnitude entries of ``tensor`` in place; return that count."""
    check_prune_ratio(prune_ratio)
    numel = tensor.numel()
    k = round(prune_ratio * numel)
    if k == 0:
        return 0
    if k >= numel:
        tensor.zero_()
        return numel
    flat = tensor.reshape(-1)  # a view when contiguous; otherwise written back below
    magnitude = flat.abs()
    # k-th smallest magnitude (1-based): kthvalue has no size cap, unlike torch.quantile (2^24).
    threshold = magnitude.kthvalue(k).values
    prune = magnitude < threshold
    missing = k - int(prune.sum())
    at_threshold = magnitude == threshold
    if int(at_threshold.sum()) == missing:
        prune |= at_threshold
    else:
        # More ties than slots: zero the tied entries with the lowest flat indices (deterministic everywhere).
        tied_index = at_threshold.nonzero().squeeze(1)[:missing]
        prune[tied_index] = True
    flat.masked_fill_(prune, 0)
    if not tensor.is_contiguous():
        tensor.copy_(flat.view_as(tensor))
    return k


def random_prune_(tensor: torch.Tensor, prune_ratio: float, generator: torch.Generator | None = None) -> int:
    """Zero each entry of ``tensor`` with probability ``prune_ratio`` in place; return how many were zeroed."""
    check_prune_ratio(prune_ratio)
    if prune_ratio == 0.0:
        return 0
    draw = torch.rand(tensor.shape, generator=generator, device=tensor.device, dtype=torch.float32)
    prune = draw < prune_ratio
    tensor.masked_fill_(prune, 0)
    return int(prune.sum())


def magnitude_prune_(tensor: torch.Tensor, prune_ratio: float) -> int:
    """Dispatching entry point of :func:`magnitude_prune_reference` (same contract)."""
    launcher = triton_op("magnitude_prune_triton", "magnitude_prune_triton") if kernels_enabled(tensor) else None
    if launcher is not None:
        return launcher(tensor, prune_ratio)
    return magnitude_prune_reference(tensor, prune_ratio)
