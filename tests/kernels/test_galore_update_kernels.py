"""The fused GaLore kernels against their PyTorch references and against the update written out in float64.

GaLore (Zhao et al. 2024, Algorithm 1) with AdamW: M ← β₁M + (1−β₁)R, V ← β₂V + (1−β₂)R²,
N = (M/(1−β₁ᵗ)) / (sqrt(V/(1−β₂ᵗ)) + ε), W ← (1 − ηλ)W − ηα·P N (left) or − ηα·N Qᵀ (right).
"""

from types import SimpleNamespace

import pytest
import torch

from hf_pept.kernels import galore_update
from hf_pept.kernels.galore_update import adam_lowrank_update_reference, lowrank_weight_update_reference

BETA1, BETA2, EPS, STEP = 0.9, 0.999, 1e-8, 3
LR, SCALE, DECAY = 0.05, 0.25, 0.1
TOLERANCE = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.bfloat16: {"rtol": 1e-2, "atol": 1e-2}}


def _moments(shape, dtype, device):
    exp_avg = (0.1 * torch.randn(shape, device=device)).to(dtype)
    exp_avg_sq = (0.1 * torch.rand(shape, device=device) + 1e-3).to(dtype)
    return exp_avg, exp_avg_sq


def _adam_formula(R, exp_avg, exp_avg_sq):
    """The Adam step on R in float64, from the moments as stored (the test's independent reference)."""
    r = R.double()
    m = BETA1 * exp_avg.double() + (1 - BETA1) * r
    v = BETA2 * exp_avg_sq.double() + (1 - BETA2) * r * r
    return m, v, (m / (1 - BETA1**STEP)) / ((v / (1 - BETA2**STEP)).sqrt() + EPS)


def _check_adam(shape, moment_dtype, device):
    from hf_pept.kernels.galore_update_triton import adam_lowrank_update_triton

    R = torch.randn(shape, device=device)
    exp_avg, exp_avg_sq = _moments(shape, moment_dtype, device)
    m64, v64, n64 = _adam_formula(R, exp_avg, exp_avg_sq)
    ref_avg, ref_avg_sq = exp_avg.clone(), exp_avg_sq.clone()
    expected = adam_lowrank_update_reference(R, ref_avg, ref_avg_sq, beta1=BETA1, beta2=BETA2, eps=EPS, step=STEP)
    update = adam_lowrank_update_triton(R, exp_avg, exp_avg_sq, beta1=BETA1, beta2=BETA2, eps=EPS, step=STEP)
    tol = TOLERANCE[moment_dtype]
    assert update.dtype == torch.float32 and update.shape == R.shape
    torch.testing.assert_close(exp_avg, ref_avg, **tol)
    torch.testing.assert_close(exp_avg_sq, ref_avg_sq, **tol)
    torch.testing.assert_close(update, expected, **tol)
    torch.testing.assert_close(exp_avg.double(), m64, **tol)
    torch.testing.assert_close(exp_avg_sq.double(), v64, **tol)
    torch.testing.assert_close(update.double(), n64, **tol)


def _check_weight_update(m, n, rank, side, weight_dtype, device):
    from hf_pept.kernels.galore_update_triton import lowrank_weight_update_triton

    weight = torch.randn(m, n, device=device).to(weight_dtype)
    projector = torch.randn(m if side == "left" else n, rank, device=device).to(weight_dtype)
    update = torch.randn((rank, n) if side == "left" else (m, rank), device=device)
    expected = weight.clone()
    lowrank_weight_update_reference(expected, projector, update, lr=LR, scale=SCALE, weight_decay=DECAY, side=side)
    p64, n64 = projector.double(), update.to(weight_dtype).double()
    product = p64 @ n64 if side == "left" else n64 @ p64.t()
    formula = (1 - LR * DECAY) * weight.double() - LR * SCALE * product
    storage = weight.data_ptr()
    lowrank_weight_update_triton(weight, projector, update, lr=LR, scale=SCALE, weight_decay=DECAY, side=side)
    assert weight.data_ptr() == storage  # in place
    tol = TOLERANCE[weight_dtype]
    torch.testing.assert_close(weight, expected, **tol)
    # Against float64 the fp32 sum over r terms carries ~sqrt(r) roundings of the product's size (~0.3 here).
    formula_tol = {"rtol": tol["rtol"], "atol": max(tol["atol"], 1e-5)}
    torch.testing.assert_close(weight.double(), formula, **formula_tol)


# ---- CPU: Triton interpreter, odd shapes (not multiples of the 16×32 interpreter tiles) -------------------------
@pytest.mark.parametrize("moment_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 77), (7, 45), (45, 7), (64, 33)])
def test_adam_lowrank_kernel_matches_reference_interpreted(interpreter, shape, moment_dtype):
    _check_adam(shape, moment_dtype, "cpu")


@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("rank", [1, 7, 64])
def test_lowrank_weight_update_kernel_matches_reference_interpreted(interpreter, rank, side, weight_dtype):
    _check_weight_update(45, 77, rank, side, weight_dtype, "cpu")


def test_dispatcher_falls_back_to_reference_when_the_triton_module_cannot_load(monkeypatch):
    # A tensor the dispatcher would send to Triton, whose Triton module fails to import, gets the reference.
    from hf_pept.kernels import dispatch

    monkeypatch.setattr(galore_update, "kernels_enabled", lambda tensor: True)
    monkeypatch.setattr(dispatch, "importlib", SimpleNamespace(import_module=_raise_import_error))
    dispatch.triton_op.cache_clear()
    try:
        R = torch.randn(7, 45)
        exp_avg, exp_avg_sq = _moments(R.shape, torch.float32, "cpu")
        ref_avg, ref_avg_sq = exp_avg.clone(), exp_avg_sq.clone()
        expected = adam_lowrank_update_reference(R, ref_avg, ref_avg_sq, beta1=BETA1, beta2=BETA2, eps=EPS, step=STEP)
        with pytest.warns(UserWarning, match="using the PyTorch reference"):
            update = galore_update.adam_lowrank_update(
                R, exp_avg, exp_avg_sq, beta1=BETA1, beta2=BETA2, eps=EPS, step=STEP
            )
        weight = torch.randn(45, 45)
        expected_weight = weight.clone()
        projector = torch.randn(45, 7)
        lowrank_weight_update_reference(
            expected_weight, projector, update, lr=LR, scale=SCALE, weight_decay=DECAY, side="left"
        )
        galore_update.lowrank_weight_update_(
            weight, projector, update, lr=LR, scale=SCALE, weight_decay=DECAY, side="left"
        )
    finally:
        dispatch.triton_op.cache_clear()
    assert torch.equal(update, expected) and torch.equal(exp_avg, ref_avg) and torch.equal(exp_avg_sq, ref_avg_sq)
    assert torch.equal(weight, expected_weight)


def _raise_import_error(name, *args, **kwargs):
    raise ImportError(f"simulated: {name} cannot be imported")


# ---- CUDA: compiled kernels at the dtypes training uses ----------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("moment_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 2049), (7, 5461), (64, 4097), (511, 1000)])
def test_adam_lowrank_kernel_matches_reference_cuda(shape, moment_dtype):
    _check_adam(shape, moment_dtype, "cuda")


@pytest.mark.gpu
@pytest.mark.parametrize("weight_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("rank", [1, 7, 64, 512])
def test_lowrank_weight_update_kernel_matches_reference_cuda(rank, side, weight_dtype):
    _check_weight_update(1000, 1531, rank, side, weight_dtype, "cuda")


@pytest.mark.gpu
def test_dispatchers_run_triton_on_cuda():
    from hf_pept.kernels.dispatch import kernels_enabled

    assert kernels_enabled(torch.zeros(1, device="cuda"))
    R = torch.randn(64, 1000, device="cuda")
    exp_avg, exp_avg_sq = _moments(R.shape, torch.float32, "cuda")
    update = galore_update.adam_lowrank_update(R, exp_avg, exp_avg_sq, beta1=BETA1, beta2=BETA2, eps=EPS, step=STEP)
    assert update.is_cuda and torch.isfinite(update).all()
