"""The radix-select magnitude-pruning kernel against the reference and against the exact top-k property.

ReLoRA (Lialin et al. 2023, §3): zero the k = round(p·n) smallest-magnitude entries, keep the n − k largest;
ties at the threshold are zeroed lowest flat index first.
"""

import pytest
import torch

from hf_pept.kernels.magnitude_prune import magnitude_prune_reference


def _check(tensor: torch.Tensor, prune_ratio: float) -> None:
    from hf_pept.kernels.magnitude_prune_triton import magnitude_prune_triton

    expected = tensor.clone()
    expected_count = magnitude_prune_reference(expected, prune_ratio)
    storage = tensor.data_ptr()
    count = magnitude_prune_triton(tensor, prune_ratio)
    assert tensor.data_ptr() == storage
    assert count == expected_count == round(prune_ratio * tensor.numel())
    assert torch.equal(tensor, expected)


def _check_top_k(original: torch.Tensor, pruned: torch.Tensor, prune_ratio: float) -> None:
    """Independent of the reference: exactly n − k entries survive, unchanged, and none is smaller than a pruned one."""
    k = round(prune_ratio * original.numel())
    kept = pruned != 0
    assert int(kept.sum()) == original.numel() - k
    assert torch.equal(pruned[kept], original[kept])
    assert original[kept].abs().min() >= original[~kept].abs().max()


# ---- CPU: Triton interpreter (128-element blocks, so these sizes span several blocks and end mid-block) -------
@pytest.mark.parametrize(
    "dtype,prune_ratio",
    [(torch.float32, ratio) for ratio in (0.0, 0.1, 0.5, 0.9, 0.999, 1.0)]
    + [(torch.bfloat16, 0.9), (torch.float16, 0.3)],
)
def test_magnitude_prune_kernel_matches_reference_interpreted(interpreter, dtype, prune_ratio):
    original = torch.randn(37, 53).to(dtype)
    pruned = original.clone()
    _check(pruned, prune_ratio)
    if 0.0 < prune_ratio < 1.0:
        _check_top_k(original, pruned, prune_ratio)


def test_magnitude_prune_kernel_breaks_ties_by_lowest_index_interpreted(interpreter):
    # Few distinct magnitudes (with signs and zeros): the threshold value is shared by many entries across blocks.
    original = torch.randint(-3, 4, (19, 41)).float() * 0.5
    tensor = original.clone()
    _check(tensor, 0.6)
    threshold = original.abs().reshape(-1).kthvalue(round(0.6 * original.numel())).values
    tied = original.abs() == threshold
    zeroed_tied = (tensor == 0) & tied
    assert 0 < int(zeroed_tied.sum()) < int(tied.sum())  # the case that needs the tie rule
    first_kept = int(((tensor != 0) & tied).reshape(-1).nonzero()[0])
    assert not (zeroed_tied.reshape(-1)[first_kept:]).any()  # every zeroed tie precedes every kept one


def test_magnitude_prune_kernel_non_contiguous_and_tiny_values_interpreted(interpreter):
    # A transposed view (written back in place) and magnitudes that differ only in the lowest mantissa bits,
    # which only the third radix digit separates.
    base = 1.0 + torch.arange(300, dtype=torch.float32) * 2**-23
    tensor = base[torch.randperm(300)].reshape(20, 15).t()
    original = tensor.clone()
    _check(tensor, 0.37)
    _check_top_k(original, tensor, 0.37)
    subnormal = torch.randn(513) * 1e-40
    _check(subnormal, 0.5)


# ---- CUDA ----------------------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("numel", [1, 4097, 1_000_003])
def test_magnitude_prune_kernel_matches_reference_cuda(dtype, numel):
    tensor = torch.randn(numel, device="cuda").to(dtype)
    _check(tensor, 0.9)


@pytest.mark.gpu
def test_magnitude_prune_kernel_ties_cuda():
    tensor = torch.randint(-3, 4, (1001, 999), device="cuda").float()
    _check(tensor, 0.6)


@pytest.mark.gpu
def test_magnitude_prune_kernel_above_2_pow_24_elements_cuda():
    from hf_pept.kernels.magnitude_prune_triton import magnitude_prune_triton

    original = torch.randn(2**25 + 3, device="cuda")
    original[original == 0] = 1.0
    pruned = original.clone()
    assert magnitude_prune_triton(pruned, 0.9) == round(0.9 * original.numel())
    _check_top_k(original, pruned, 0.9)
