"""Triton kernels of the GaLore step (references and the math: ``galore_update.py``).

* :func:`adam_lowrank_update_triton`: the Adam moment update on the low-rank gradient R and the normalised
  update N_t in ONE elementwise pass (GaLore Algorithm 1 with AdamW; the reference takes ~8 kernels and two
  R-sized temporaries): reads R, M, V once, writes M, V and N once.
* :func:`lowrank_weight_update_triton`: W ← (1 − ηλ)W − ηα·P N (left) or − ηα·N Qᵀ (right) as one GEMM whose
  epilogue reads and rewrites W in place (``addmm_epilogue_triton``), fp32 accumulation. The factors are read in
  their stored dtype and cast in registers, so the fp32 N is never copied to the weight dtype in memory.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .addmm_epilogue_triton import addmm_epilogue_
from .dispatch import interpreting


@triton.jit
def _adam_lowrank_kernel(
    r_ptr,
    m_ptr,
    v_ptr,
    n_ptr,
    numel,
    beta1_weight,
    beta2,
    one_minus_beta2,
    bias_correction1,
    bias_correction2,
    eps,
    BLOCK: tl.constexpr,
):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    # R is rounded to the moments' dtype first, as the reference's ``R32.to(exp_avg.dtype)`` does.
    r = tl.load(r_ptr + offs, mask=mask, other=0.0).to(m_ptr.dtype.element_ty).to(tl.float32)
    m = tl.load(m_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    v = tl.load(v_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    # M_t = β₁M + (1 − β₁)R in torch.lerp's form (the branch torch takes for weight 1 − β₁ < 0.5, and the other).
    if beta1_weight < 0.5:
        m = m + beta1_weight * (r - m)
    else:
        m = r - (r - m) * (1.0 - beta1_weight)
    m = m.to(m_ptr.dtype.element_ty)
    # V_t = β₂V + (1 − β₂)R², rounded after the multiply like the reference's mul_ then addcmul_.
    v = (v * beta2).to(v_ptr.dtype.element_ty).to(tl.float32)
    v = (v + one_minus_beta2 * r * r).to(v_ptr.dtype.element_ty)
    tl.store(m_ptr + offs, m, mask=mask)
    tl.store(v_ptr + offs, v, mask=mask)
    denom = tl.sqrt_rn(tl.div_rn(v.to(tl.float32), bias_correction2)) + eps
    n = tl.div_rn(tl.div_rn(m.to(tl.float32), bias_correction1), denom)
    tl.store(n_ptr + offs, n, mask=mask)


def adam_lowrank_update_triton(
    R: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    step: int,
) -> torch.Tensor:
    """Same contract as :func:`~hf_pept.kernels.galore_update.adam_lowrank_update_reference`."""
    if not (R.shape == exp_avg.shape == exp_avg_sq.shape):
        raise ValueError(
            f"R {tuple(R.shape)}, exp_avg {tuple(exp_avg.shape)} and exp_avg_sq {tuple(exp_avg_sq.shape)} differ"
        )
    if not (R.is_contiguous() and exp_avg.is_contiguous() and exp_avg_sq.is_contiguous()):
        from .galore_update import adam_lowrank_update_reference

        return adam_lowrank_update_reference(R, exp_avg, exp_avg_sq, beta1=beta1, beta2=beta2, eps=eps, step=step)
    update = torch.empty(R.shape, dtype=torch.float32, device=R.device)
    numel = R.numel()
    if numel == 0:
        return update
    block = 256 if interpreting() else 2048
    _adam_lowrank_kernel[(triton.cdiv(numel, block),)](
        R,
        exp_avg,
        exp_avg_sq,
        update,
        numel,
        1.0 - beta1,
        beta2,
        1.0 - beta2,
        1.0 - beta1**step,
        1.0 - beta2**step,
        eps,
        BLOCK=block,
        num_warps=4,
    )
    return update


def lowrank_weight_update_triton(
    weight: torch.Tensor,
    projector: torch.Tensor,
    update: torch.Tensor,
    *,
    lr: float,
    scale: float,
    weight_decay: float,
    side: str,
) -> None:
    """Same contract as :func:`~hf_pept.kernels.galore_update.lowrank_weight_update_reference`."""
    if side == "left":
        factor_a, factor_b = projector, update
    elif side == "right":
        factor_a, factor_b = update, projector.t()
    else:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    addmm_epilogue_(weight, factor_a, factor_b, beta=1 - lr * weight_decay, alpha=-lr * scale)
