"""The PyTorch references of ReLoRA's two ops against computations written out here."""

import pytest
import torch

from hf_pept.kernels.lora_merge import merge_lora_, merge_lora_reference
from hf_pept.kernels.magnitude_prune import magnitude_prune_, magnitude_prune_reference, random_prune_


def _assert_exact_top_k(original: torch.Tensor, pruned: torch.Tensor, prune_ratio: float) -> None:
    """``original`` has no zeros, so the kept entries are exactly the non-zero ones of ``pruned``."""
    k = round(prune_ratio * original.numel())
    kept = pruned != 0
    assert int(kept.sum()) == original.numel() - k
    assert torch.equal(pruned[kept], original[kept])
    assert original[kept].abs().min() >= original[~kept].abs().max()


def test_magnitude_prune_above_2_pow_24_elements_keeps_exactly_the_largest():
    # torch.quantile (the reference ReLoRA code's threshold) refuses inputs of this size.
    generator = torch.Generator().manual_seed(0)
    original = torch.randn(2**24 + 3, generator=generator)
    original[original == 0] = 1.0
    pruned = original.clone()
    zeroed = magnitude_prune_(pruned, 0.9)
    assert zeroed == round(0.9 * original.numel())
    _assert_exact_top_k(original, pruned, 0.9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("prune_ratio", [0.0, 0.3, 0.9, 0.999])
def test_magnitude_prune_matches_a_sort(dtype, prune_ratio):
    generator = torch.Generator().manual_seed(1)
    original = (torch.randn(37, 53, generator=generator) + 1e-3).to(dtype)
    original[original == 0] = 1.0
    pruned = original.clone()
    assert magnitude_prune_(pruned, prune_ratio) == round(prune_ratio * original.numel())
    # Independent reference: a stable sort by magnitude; the first k indices are the ones to zero.
    k = round(prune_ratio * original.numel())
    order = torch.sort(original.reshape(-1).abs().float(), stable=True).indices
    expected = original.reshape(-1).clone()
    expected[order[:k]] = 0
    assert torch.equal(pruned.reshape(-1), expected)


def test_magnitude_prune_breaks_ties_by_index_and_handles_non_contiguous():
    original = torch.tensor([[3.0, -1.0, 1.0, 2.0], [1.0, -1.0, 5.0, 0.5]]).t()  # non-contiguous view
    pruned = original.clone().t().contiguous().t()
    assert not pruned.is_contiguous()
    assert magnitude_prune_reference(pruned, 0.5) == 4
    # Flat row-major order of the view: 3, 1, -1, -1, 1, 5, 2, 0.5 -> zero 0.5 then the first three |1|s.
    expected = torch.tensor([[3.0, 0.0], [0.0, 0.0], [1.0, 5.0], [2.0, 0.0]])
    assert torch.equal(pruned, expected)


def test_magnitude_prune_edge_ratios_and_bad_ratio():
    tensor = torch.randn(10)
    assert magnitude_prune_(tensor.clone(), 0.0) == 0
    full = tensor.clone()
    assert magnitude_prune_(full, 1.0) == 10 and torch.count_nonzero(full) == 0
    with pytest.raises(ValueError, match="prune_ratio"):
        magnitude_prune_(tensor, 1.5)


def test_random_prune_rate_and_same_mask_from_same_seed():
    original = torch.randn(200_000)
    first, second = original.clone(), original.clone()
    n_first = random_prune_(first, 0.9, torch.Generator().manual_seed(7))
    n_second = random_prune_(second, 0.9, torch.Generator().manual_seed(7))
    assert n_first == n_second and torch.equal(first, second)
    assert abs(n_first / original.numel() - 0.9) < 0.005  # binomial std ≈ 0.0007
    kept = first != 0
    assert torch.equal(first[kept], original[kept])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merge_lora_equals_full_weight_formula(dtype):
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(24, 40, generator=generator)
    lora_A = torch.randn(5, 40, generator=generator)
    lora_B = torch.randn(24, 5, generator=generator)
    scaling = 16 / 5
    expected = weight.double() + scaling * (lora_B.double() @ lora_A.double())
    merged = weight.to(dtype)
    storage = merged.data_ptr()
    merge_lora_(merged, lora_A, lora_B, scaling)
    assert merged.data_ptr() == storage
    if dtype == torch.float32:
        torch.testing.assert_close(merged.double(), expected, rtol=1e-6, atol=1e-5)
    else:
        # One rounding of the fp32 result: identical to rounding the exact value, up to one bf16 ulp.
        base = weight.to(dtype).double() + scaling * (lora_B.double() @ lora_A.double())
        torch.testing.assert_close(merged.double(), base.to(dtype).double(), rtol=1e-2, atol=1e-5)


def test_merge_lora_rejects_shapes_that_do_not_chain():
    with pytest.raises(ValueError, match="do not chain"):
        merge_lora_reference(torch.zeros(4, 6), torch.zeros(2, 5), torch.zeros(4, 2), 1.0)
