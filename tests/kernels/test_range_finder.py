"""The randomized range finder (Halko et al. 2011, Alg. 4.4 + 5.1) against the exact SVD of planted spectra."""

import pytest
import torch

from hf_pept.kernels.range_finder import randomized_range_finder


def _planted(m, n, rank, gap, device="cpu", generator_seed=0):
    """A matrix with known singular vectors: top-``rank`` values in [5, 10], the rest below ``10 / gap``."""
    generator = torch.Generator().manual_seed(generator_seed)
    u = torch.linalg.qr(torch.randn(m, min(m, n), generator=generator))[0]
    v = torch.linalg.qr(torch.randn(n, min(m, n), generator=generator))[0]
    tail = torch.rand(min(m, n) - rank, generator=generator) * 10 / gap
    values = torch.cat([torch.linspace(10, 5, rank), tail])
    return ((u * values) @ v.t()).to(device), u[:, :rank].to(device), v[:, :rank].to(device)


def _cosines(expected_basis, basis):
    """Cosines of the principal angles between two subspaces (all 1 when they coincide)."""
    return torch.linalg.svdvals(expected_basis.t().double() @ basis.double())


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("rank", [1, 7, 24])
def test_range_finder_recovers_the_top_singular_subspace(side, rank):
    matrix, left, right = _planted(70, 90, rank, gap=20)
    generator = torch.Generator().manual_seed(1)
    basis = randomized_range_finder(matrix, rank, oversample=8, power_iters=2, generator=generator, side=side)
    expected = left if side == "left" else right
    assert basis.shape == expected.shape and basis.dtype == torch.float32 and basis.is_contiguous()
    torch.testing.assert_close(basis.t() @ basis, torch.eye(rank), atol=1e-5, rtol=0)
    assert _cosines(expected, basis).min() > 0.999


def test_range_finder_orders_directions_like_the_svd():
    # With a clear gap between every value the columns are the singular vectors themselves, up to sign.
    matrix, left, _ = _planted(60, 80, 5, gap=50)
    basis = randomized_range_finder(
        matrix, 5, oversample=10, power_iters=3, generator=torch.Generator().manual_seed(0)
    )
    exact = torch.linalg.svd(matrix, full_matrices=False)[0][:, :5]
    torch.testing.assert_close((basis * exact).sum(0).abs(), torch.ones(5), atol=1e-4, rtol=0)


def test_range_finder_power_iterations_help_on_a_flat_spectrum():
    matrix, left, _ = _planted(80, 100, 8, gap=2)
    errors = []
    for power_iters in (0, 3):
        basis = randomized_range_finder(
            matrix, 8, oversample=4, power_iters=power_iters, generator=torch.Generator().manual_seed(3)
        )
        errors.append(1 - float(_cosines(left, basis).min()))
    assert errors[1] < errors[0] / 10


def test_range_finder_is_deterministic_for_a_seeded_generator_and_handles_rank_deficiency():
    matrix = torch.randn(50, 3) @ torch.randn(3, 70)  # rank 3 < rank + oversample: the QR must not break
    first = randomized_range_finder(matrix, 6, oversample=4, power_iters=1, generator=torch.Generator().manual_seed(5))
    again = randomized_range_finder(matrix, 6, oversample=4, power_iters=1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert torch.isfinite(first).all()
    top3 = torch.linalg.svd(matrix, full_matrices=False)[0][:, :3]
    assert _cosines(top3, first[:, :3]).min() > 0.999


@pytest.mark.parametrize(
    "kwargs,match",
    [({"rank": 0}, "rank"), ({"rank": 51}, "rank"), ({"side": "up"}, "side"), ({"oversample": -1}, "oversample")],
)
def test_range_finder_rejects_bad_arguments(kwargs, match):
    arguments = {"rank": 4, "side": "left", "oversample": 2}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        randomized_range_finder(torch.randn(50, 60), **arguments)


@pytest.mark.gpu
@pytest.mark.parametrize("side", ["left", "right"])
def test_range_finder_cuda_recovers_the_top_singular_subspace(side):
    matrix, left, right = _planted(1000, 1531, 64, gap=20, device="cuda")
    generator = torch.Generator().manual_seed(0)
    basis = randomized_range_finder(matrix, 64, oversample=8, power_iters=2, generator=generator, side=side)
    expected = left if side == "left" else right
    assert basis.is_cuda
    torch.testing.assert_close(basis.t() @ basis, torch.eye(64, device="cuda"), atol=1e-4, rtol=0)
    # The sketch products run in bf16 on CUDA: the subspace is right to bf16 accuracy.
    assert _cosines(expected, basis).min() > 0.99
    again = randomized_range_finder(
        matrix, 64, oversample=8, power_iters=2, generator=torch.Generator().manual_seed(0), side=side
    )
    assert torch.equal(basis, again)
