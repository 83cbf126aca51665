"""Randomized range finder for GaLore's projector refresh (``proj_method="randomized"``).

Halko, Martinsson & Tropp 2011 (arXiv 0909.4061), Algorithm 4.4 (randomized subspace iteration) followed by the
Rayleigh–Ritz step of Algorithm 5.1: for A (m×n), target rank r and oversampling p, with k = r + p,

    Ω ~ N(0, 1)^{n×k},   Y₀ = A Ω,   Q₀ = orth(Y₀)
    for j = 1 … q:   Q̃ⱼ = orth(Aᵀ Qⱼ₋₁),   Qⱼ = orth(A Q̃ⱼ)                    (power iterations, eq. 4.6)
    B = Qᵀ A (k×n),   B Bᵀ = Ũ Σ² Ũᵀ,   U_r = Q Ũ[:, :r]                            (top-r left singular vectors)

Everything is GEMMs on tall-skinny or k×k matrices: no SVD of the full m×n gradient (``torch.linalg.svd`` costs
O(m n min(m, n)) with little parallelism; this costs O(m n k (2q + 2))). ``orth`` is CholeskyQR2 (Fukaya et al.
2014: two rounds of Y ← Y L⁻ᵀ with L Lᵀ = YᵀY), two GEMMs and a k×k Cholesky, which on a GPU is several times
faster than Householder QR; when YᵀY is numerically singular (a gradient of rank < k, e.g. from a tiny batch) it
falls back to Householder QR. The rotation Ũ comes from the symmetric eigendecomposition of the k×k matrix B Bᵀ,
not from an SVD of the k×n matrix B.

On CUDA the products with A run in bf16 with fp32 accumulation (GaLore stores its projector in the weight's dtype,
bf16 in bf16 training, so an fp32 sketch buys nothing); orthonormalisation and the eigensolver run in fp32. On CPU
everything is fp32.
"""

from __future__ import annotations

import torch

LEFT, RIGHT = "left", "right"


def _device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator | None:
    # The caller's generator may live on the CPU (so every data-parallel rank and a resumed run seed it alike);
    # drawing Ω there and copying it over would cost more than the whole sketch, so a device generator is seeded
    # from one draw of it instead: still a pure function of the caller's seed.
    if generator is None or generator.device == device or device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    device_generator = torch.Generator(device=device)
    device_generator.manual_seed(seed)
    return device_generator


def _orthonormalize(y: torch.Tensor) -> torch.Tensor:
    """An orthonormal basis of the columns of ``y`` (fp32, tall m×k): CholeskyQR2, Householder QR as fallback."""
    if y.is_cuda:
        q = y
        for _ in range(2):
            gram = q.t() @ q
            factor, info = torch.linalg.cholesky_ex(gram)
            if bool(info.any()):
                break
            q = torch.linalg.solve_triangular(factor, q.t(), upper=False).t()
        else:
            return q
    return torch.linalg.qr(y)[0]


def randomized_range_finder(
    G: torch.Tensor,
    rank: int,
    *,
    oversample: int = 8,
    power_iters: int = 2,
    generator: torch.Generator | None = None,
    side: str = LEFT,
) -> torch.Tensor:
    """Orthonormal basis (fp32, contiguous) of the top-``rank`` singular subspace of ``G`` (m×n) on ``side``.

    ``side="left"`` returns P (m×r), approximating the top-r left singular vectors (GaLore's R = PᵀG);
    ``side="right"`` returns Q (n×r), the top-r right singular vectors (R = GQ). ``oversample`` (p) and
    ``power_iters`` (q) trade time for accuracy as in Halko et al. §4.3–4.5; ``generator`` seeds Ω (any device;
    see :func:`_device_generator`). Deterministic for a given generator state and device.
    """
    if G.dim() != 2:
        raise ValueError(f"randomized_range_finder needs a 2-D matrix, got shape {tuple(G.shape)}")
    if side not in (LEFT, RIGHT):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if rank < 1 or rank > min(G.shape):
        raise ValueError(f"rank must be in [1, {min(G.shape)}] for a {tuple(G.shape)} matrix, got {rank!r}")
    if oversample < 0 or power_iters < 0:
        raise ValueError(f"oversample and power_iters must be >= 0, got {oversample!r} and {power_iters!r}")
    matrix = G.detach() if side == LEFT else G.detach().t()
    m, n = matrix.shape
    width = min(rank + oversample, m, n)
    work_dtype = torch.bfloat16 if matrix.is_cuda else torch.float32
    a = matrix.to(work_dtype)

    omega = torch.randn(n, width, generator=_device_generator(generator, matrix.device), device=matrix.device)
    basis = _orthonormalize((a @ omega.to(work_dtype)).float())
    for _ in range(power_iters):
        co_basis = _orthonormalize((a.t() @ basis.to(work_dtype)).float())
        basis = _orthonormalize((a @ co_basis.to(work_dtype)).float())
    small = (basis.t().to(work_dtype) @ a).float()  # B = QᵀA, k×n
    _, eigenvectors = torch.linalg.eigh(small @ small.t())  # ascending eigenvalues of B Bᵀ = Ũ Σ² Ũᵀ
    top = eigenvectors[:, -rank:].flip(1)
    return (basis @ top).contiguous()
