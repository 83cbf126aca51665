"""The Triton LoRA merge W ← W + (α/r)·B A (LoRA eq. 3, ReLoRA eq. 2) against the reference and float64."""

import pytest
import torch

from hf_pept.kernels.lora_merge import merge_lora_reference

TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {"rtol": 1e-2, "atol": 1e-2}}


def _check(out_features, in_features, rank, weight_dtype, factor_dtype, device):
    from hf_pept.kernels.lora_merge_triton import merge_lora_triton

    weight = torch.randn(out_features, in_features, device=device).to(weight_dtype)
    lora_A = (torch.randn(rank, in_features, device=device) / rank**0.5).to(factor_dtype)
    lora_B = torch.randn(out_features, rank, device=device).to(factor_dtype)
    scaling = 16 / rank
    expected = weight.clone()
    merge_lora_reference(expected, lora_A, lora_B, scaling)
    formula = weight.double() + scaling * (lora_B.double() @ lora_A.double())
    storage = weight.data_ptr()
    merge_lora_triton(weight, lora_A, lora_B, scaling)
    assert weight.data_ptr() == storage and weight.dtype == weight_dtype
    tol = TOLERANCE[weight_dtype]
    torch.testing.assert_close(weight, expected, **tol)
    torch.testing.assert_close(weight.double(), formula, **tol)


@pytest.mark.parametrize(
    "weight_dtype,factor_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)],
)
@pytest.mark.parametrize("rank", [1, 7, 64])
def test_lora_merge_kernel_matches_reference_interpreted(interpreter, rank, weight_dtype, factor_dtype):
    _check(45, 77, rank, weight_dtype, factor_dtype, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize(
    "weight_dtype,factor_dtype",
    [(torch.float32, torch.float32), (torch.bfloat16, torch.bfloat16), (torch.bfloat16, torch.float32)],
)
@pytest.mark.parametrize("rank", [1, 7, 64, 256])
def test_lora_merge_kernel_matches_reference_cuda(rank, weight_dtype, factor_dtype):
    _check(2049, 1531, rank, weight_dtype, factor_dtype, "cuda")


@pytest.mark.gpu
def test_lora_merge_dispatcher_runs_triton_on_cuda(monkeypatch):
    from hf_pept.kernels import lora_merge

    calls = []
    import hf_pept.kernels.lora_merge_triton as triton_module

    original = triton_module.merge_lora_triton
    monkeypatch.setattr(triton_module, "merge_lora_triton", lambda *a: calls.append(1) or original(*a))
    weight = torch.randn(256, 300, device="cuda", dtype=torch.bfloat16)
    lora_merge.merge_lora_(weight, torch.randn(8, 300, device="cuda"), torch.randn(256, 8, device="cuda"), 2.0)
    assert calls == [1]
