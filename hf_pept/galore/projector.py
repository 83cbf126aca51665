"""The GaLore projector: which side of a weight's gradient is projected, and the orthonormal basis itself.

GaLore (Zhao et al. 2024, arXiv 2403.03507), eq. (6)-(7): for a gradient G (m×n) the projected gradient is
R = PᵀG with P (m×r) the top-r left singular vectors of G ("left"), or R = GQ with Q (n×r) the top-r right
singular vectors ("right"), or R = PᵀGQ ("full"). Projectors are plain tensors, so optimizer state stays
checkpoint-safe (``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import torch

from ..kernels.range_finder import randomized_range_finder

LEFT, RIGHT, FULL = "left", "right", "full"


def projection_side(shape: tuple[int, ...], proj_type: str) -> str:
    """The side GaLore projects for a weight of ``shape`` (m, n).

    'std' projects the smaller side (left when m < n, right otherwise, as galore-torch does for m == n), so the
    moments have the smaller of r×n and m×r; 'reverse_std' the larger side.
    """
    m, n = shape
    if proj_type == "std":
        return LEFT if m < n else RIGHT
    if proj_type == "reverse_std":
        return RIGHT if m < n else LEFT
    if proj_type in (LEFT, RIGHT, FULL):
        return proj_type
    raise ValueError(f"proj_type must be one of ('std', 'reverse_std', 'left', 'right', 'full'), got {proj_type!r}")


def _sketch_generator(seed: int, param_index: int, step: int) -> torch.Generator:
    # A fresh generator per (parameter, step): resumed runs and every DDP rank draw the same sketch without
    # having to checkpoint RNG state.
    generator = torch.Generator(device="cpu")
    generator.manual_seed((seed * 1_000_003 + param_index) * 1_000_033 + step)
    return generator


def compute_projectors(
    grad: torch.Tensor,
    rank: int,
    side: str,
    *,
    proj_method: str = "svd",
    oversampling: int = 8,
    power_iters: int = 2,
    seed: int = 0,
    param_index: int = 0,
    step: int = 0,
) -> tuple[torch.Tensor, ...]:
    """The orthonormal basis (fp32) of the top-``rank`` singular subspace of ``grad`` for ``side``.

    Returns ``(P,)`` (m×r) for "left", ``(Q,)`` (n×r) for "right", ``(P, Q)`` for "full".
    """
    matrix = grad.detach().float()
    if proj_method == "svd":
        u, _, vh = torch.linalg.svd(matrix, full_matrices=False)
        left, right = u[:, :rank], vh[:rank].t()
    elif proj_method == "randomized":
        # Halko, Martinsson & Tropp 2011, Alg. 4.4 + 5.1 (subspace iteration, then Rayleigh-Ritz)
        kwargs = {"oversample": oversampling, "power_iters": power_iters}
        left = right = None
        if side in (LEFT, FULL):
            generator = _sketch_generator(seed, param_index, step)
            left = randomized_range_finder(matrix, rank, side=LEFT, generator=generator, **kwargs)
        if side in (RIGHT, FULL):
            generator = _sketch_generator(seed, param_index, step)
            right = randomized_range_finder(matrix, rank, side=RIGHT, generator=generator, **kwargs)
    else:
        raise ValueError(f"proj_method must be one of ('svd', 'randomized'), got {proj_method!r}")
    if side == LEFT:
        return (left.contiguous(),)
    if side == RIGHT:
        return (right.contiguous(),)
    return left.contiguous(), right.contiguous()


def project(grad: torch.Tensor, projectors: tuple[torch.Tensor, ...], side: str) -> torch.Tensor:
    """R = PᵀG (left), GQ (right) or PᵀGQ (full) — GaLore eq. (6); fp32, never larger than G's smaller side × r."""
    g = grad.to(projectors[0].dtype)
    if side == LEFT:
        return projectors[0].t() @ g
    if side == RIGHT:
        return g @ projectors[0]
    return (projectors[0].t() @ g) @ projectors[1]
