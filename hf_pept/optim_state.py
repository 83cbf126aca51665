"""Optimizer-state surgery shared by the tuners: zero or prune the state of some parameters, or of some of their
rows / columns, for any optimizer whose state is per-parameter tensors.

ReLoRA (Lialin et al. 2023, arXiv 2307.05695, §3): after a merge the factors restart, but their Adam moments still
describe the old factors. Zeroing them all made the loss diverge in the paper; pruning most of them works: magnitude
pruning keeps the (1 − p) largest-|·| entries of each moment (p = 0.9), random pruning keeps each entry with
probability 1 − p (p = 0.999).

SwitchLoRA (Zhou et al. 2024, arXiv 2406.06564): after a row of A (a column of B) is switched, the moments of
the counterpart column of B (row of A) are zeroed; ``where=`` restricts ``mode="zero"`` to those entries.

What is pruned: every floating-point state tensor with the parameter's shape — Adam/AdamW ``exp_avg``,
``exp_avg_sq`` (and ``max_exp_avg_sq``), SGD ``momentum_buffer`` — and the 8-bit moments of bitsandbytes
optimizers (``state1``/``state2`` codes, dequantized through ``qmap``·``absmax`` to rank by magnitude; pruned entries
get the code of 0.0, kept codes and block scales are untouched). Scalars such as Adam's ``step`` are kept, so the
bias correction does not re-inflate the first updates (the paper's jagged warm-up covers the restart).
Only the given parameters' state is touched. FSDP2-sharded (DTensor) state is gathered, pruned as a whole and
scattered back to each rank's rows, so every rank ends with its rows of the single-process result.

One rule beyond the paper: after pruning, a first moment whose second moment is zero is zeroed too. Pruning the two
moments independently (as the paper's code does) keeps some m with v = 0, and Adam then steps by m / ε. Right after a
restart B = 0, so A's gradient is exactly 0 and its v stays 0: those A entries jump by ~lr·m/ε and training diverges
(in our tests magnitude pruning without this rule ended far above plain LoRA). Each moment still keeps at most its
(1 − p) largest entries; the second moments keep exactly those.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import torch

from .events import unwrap_optimizer
from .fsdp import gathered_state, keep_own_rows_
from .kernels.magnitude_prune import magnitude_prune_, random_prune_

logger = logging.getLogger(__name__)

_QUANTIZED_MOMENTS = (("state1", "qmap1", "absmax1", "max1"), ("state2", "qmap2", "absmax2", "max2"))
# (first moment, second moment) pairs of Adam-style optimizers, float and bitsandbytes 8-bit.
_ADAM_PAIRS = (("exp_avg", "exp_avg_sq"),)
# State tensors already reported as left untouched (a reset every step would otherwise warn every step).
_WARNED: set[str] = set()


def _prune_(tensor: torch.Tensor, mode: str, prune_ratio: float, generator: torch.Generator | None) -> int:
    if mode == "zero":
        tensor.zero_()
        return tensor.numel()
    if mode == "magnitude":
        return magnitude_prune_(tensor, prune_ratio)
    return random_prune_(tensor, prune_ratio, generator)


def _dequantized_magnitude(codes: torch.Tensor, qmap: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """|qmap[code]| · absmax of the code's block (bitsandbytes' block-wise dynamic quantization)."""
    magnitude = qmap.float()[codes.long()].abs().reshape(-1)
    scale = scale.float().reshape(-1)
    if scale.numel() > 1:
        block_size = math.ceil(codes.numel() / scale.numel())
        magnitude = magnitude * scale.repeat_interleave(block_size)[: codes.numel()]
    else:
        magnitude = magnitude * scale
    return magnitude


def _zero_code(qmap: torch.Tensor, name: str) -> int:
    zero_code = int(qmap.float().abs().argmin())
    if qmap[zero_code] != 0:
        raise RuntimeError(f"the quantization map of {name!r} has no exact 0.0; cannot prune it")
    return zero_code


def _scale(state: dict, keys: tuple[str, str, str, str]) -> torch.Tensor:
    codes_key, _, absmax_key, max_key = keys
    scale = state.get(absmax_key, state.get(max_key))
    if scale is None:
        raise RuntimeError(f"8-bit optimizer state {codes_key!r} has neither {absmax_key!r} nor {max_key!r}")
    return scale


def _prune_quantized_(
    state: dict, keys: tuple[str, str, str, str], mode: str, prune_ratio: float, generator: torch.Generator | None
) -> int:
    codes_key, qmap_key = keys[:2]
    codes, qmap = state[codes_key], state[qmap_key]
    zero_code = _zero_code(qmap, codes_key)
    # Rank by the dequantized value, zero by writing the code of 0.0.
    magnitude = _dequantized_magnitude(codes, qmap, _scale(state, keys))
    zeroed = _prune_(magnitude, mode, prune_ratio, generator)
    pruned = (magnitude == 0).reshape(codes.shape)
    codes.masked_fill_(pruned, zero_code)
    return zeroed


def _zero_first_moments_without_second_(state: dict) -> int:
    """m ← 0 where v = 0 (Adam would step by m / ε there); returns how many entries of m that zeroed."""
    zeroed = 0
    for first, second in _ADAM_PAIRS:
        if first in state and second in state:
            lonely = (state[second] == 0) & (state[first] != 0)
            zeroed += int(lonely.sum())
            state[first].masked_fill_(lonely, 0)
    first_keys, second_keys = _QUANTIZED_MOMENTS
    if first_keys[0] in state and second_keys[0] in state and second_keys[1] in state:
        v_zero = _dequantized_magnitude(state[second_keys[0]], state[second_keys[1]], _scale(state, second_keys)) == 0
        codes, qmap = state[first_keys[0]], state[first_keys[1]]
        zero_code = _zero_code(qmap, first_keys[0])
        lonely = v_zero.reshape(codes.shape) & (codes != zero_code)
        zeroed += int(lonely.sum())
        codes.masked_fill_(lonely, zero_code)
    return zeroed


@torch.no_grad()
def reset_optimizer_state(
    optimizer,
    params: Iterable[torch.nn.Parameter],
    mode: str,
    prune_ratio: float | None = None,
    generator: torch.Generator | None = None,
    where: torch.Tensor | None = None,
) -> dict[str, int]:
    """Prune or zero the optimizer state of ``params`` in place; returns ``{"zeroed": n, "entries": N}``.

    ``mode``: "magnitude" / "random" (zero ``prune_ratio`` of each moment's entries), "zero" (all), "none".
    ``generator``: the random-pruning stream (derive it from the step so that all ranks draw the same mask).
    ``where``: with ``mode="zero"``, a boolean mask broadcastable to each parameter's shape (``(r, 1)`` picks rows,
    ``(1, r)`` columns): only those entries of each per-entry moment are zeroed (``entries`` counts them).
    """
    if mode not in ("magnitude", "random", "zero", "none"):
        raise ValueError(f"mode must be 'magnitude', 'random', 'zero' or 'none', got {mode!r}")
    if mode in ("magnitude", "random") and prune_ratio is None:
        raise ValueError(f"mode {mode!r} needs a prune_ratio in [0, 1)")
    if where is not None and mode != "zero":
        raise ValueError(f"where= selects entries to zero; it needs mode='zero', got mode={mode!r}")
    stats = {"zeroed": 0, "entries": 0}
    if mode == "none":
        return stats
    state_by_param = unwrap_optimizer(optimizer).state
    skipped: set[str] = set()
    for param in params:
        owned = state_by_param.get(param)
        if not owned:
            continue
        # FSDP2-sharded moments: the surgery runs on the gathered whole tensors (one all-gather each; the factors'
        # moments are small), exactly as in one process, and each rank keeps its own rows. Ranking magnitudes needs
        # the whole tensor: a per-shard top-k would keep a different set of entries.
        state = gathered_state(owned)
        mask = None if where is None else where.to(param.device).expand(param.shape)
        quantized = set()
        for keys in _QUANTIZED_MOMENTS:
            if keys[0] in state and keys[1] in state:
                if mask is None:
                    stats["zeroed"] += _prune_quantized_(state, keys, mode, prune_ratio, generator)
                    stats["entries"] += state[keys[0]].numel()
                else:
                    codes = state[keys[0]]
                    codes.masked_fill_(mask.reshape(codes.shape), _zero_code(state[keys[1]], keys[0]))
                    stats["zeroed"] += int(mask.sum())
                    stats["entries"] += int(mask.sum())
                quantized.update(keys)
        for key, value in state.items():
            if key in quantized or not torch.is_tensor(value) or value.numel() <= 1:
                continue
            if value.is_floating_point() and value.shape == param.shape:
                if mask is None:
                    stats["zeroed"] += _prune_(value, mode, prune_ratio, generator)
                    stats["entries"] += value.numel()
                else:
                    value.masked_fill_(mask, 0)
                    stats["zeroed"] += int(mask.sum())
                    stats["entries"] += int(mask.sum())
            else:
                skipped.add(f"{key} {tuple(value.shape)}")
        if mode in ("magnitude", "random"):
            stats["zeroed"] += _zero_first_moments_without_second_(state)
        keep_own_rows_(owned, state)
    if skipped and not _WARNED.issuperset(skipped):
        _WARNED.update(skipped)
        logger.warning("optimizer-state reset left these state tensors untouched (not per-entry moments): %s", skipped)
    return stats


def drop_optimizer_state(optimizer, params: Iterable[torch.nn.Parameter]) -> int:
    """Forget the state of ``params`` (fresh moments and step counter at their next update); returns how many."""
    state_by_param = unwrap_optimizer(optimizer).state
    dropped = 0
    for param in params:
        if state_by_param.pop(param, None) is not None:
            dropped += 1
    return dropped


# ---- per-slice Adam bias correction ---------------------------------------------------------------------------
# torch's Adam/AdamW keep one step counter t per parameter. SwitchLoRA restarts the moments of single rows of A /
# columns of B, and Adam's bias correction of such a vector must count its own steps c since that restart
# (m̂ = m / (1 − β₁^c), v̂ = v / (1 − β₂^c)), or its first updates are up to (1 − β₁)/√(1 − β₂) ≈ 3× too large.
# The helpers below redo the last update of those slices with their own counts, from the moments the optimizer just
# wrote; the rest of each parameter keeps the optimizer's own update.

# A slice's own correction equal to the shared one within this relative amount changes nothing in fp32.
BIAS_CORRECTION_TOLERANCE = 2.0**-26


def is_torch_adam(optimizer) -> bool:
    """Whether per-slice bias correction applies: torch.optim.Adam or AdamW (AdamW subclasses Adam)."""
    return isinstance(unwrap_optimizer(optimizer), torch.optim.Adam)


def adam_step_count(optimizer, param: torch.nn.Parameter) -> int:
    """The step counter t of ``param`` in a torch Adam/AdamW (0 before its first step)."""
    state = unwrap_optimizer(optimizer).state.get(param)
    if not state or "step" not in state:
        return 0
    return int(float(state["step"]))


def param_group_of(optimizer, param: torch.nn.Parameter) -> dict:
    for group in unwrap_optimizer(optimizer).param_groups:
        if any(p is param for p in group["params"]):
            return group
    raise ValueError(f"the optimizer does not hold the parameter of shape {tuple(param.shape)}")


def own_bias_correction_needed(steps: torch.Tensor, shared_step: int, betas: tuple[float, float]) -> torch.Tensor:
    """Mask of the slices whose own step counts ``steps`` give a bias correction that differs from the shared
    counter's ``shared_step`` by more than fp32 resolves (:data:`BIAS_CORRECTION_TOLERANCE`)."""
    beta1, beta2 = betas
    c = steps.to(torch.float64)
    own1, own2 = 1 - beta1**c, 1 - beta2**c
    shared1, shared2 = 1 - beta1**shared_step, 1 - beta2**shared_step
    ratio1 = (own1 / shared1 - 1).abs()
    ratio2 = ((own2 / shared2).sqrt() - 1).abs()
    return (steps != shared_step) & ((ratio1 > BIAS_CORRECTION_TOLERANCE) | (ratio2 > BIAS_CORRECTION_TOLERANCE))


@torch.no_grad()
def redo_adam_update_(
    optimizer, param: torch.nn.Parameter, dim: int, index: torch.Tensor, before: torch.Tensor, steps: torch.Tensor
) -> None:
    """Replace the last Adam/AdamW update of ``param``'s slices ``index`` along ``dim`` by one with their own step
    counts ``steps`` (one per slice).

    ``before`` holds those slices as they were before ``optimizer.step()``; the moments are the ones the step just
    wrote. Same arithmetic as torch's AdamW (Loshchilov & Hutter 2019, Algorithm 2), per slice:
    θ ← θ·(1 − lr·λ) − lr/(1 − β₁^c) · m / (√v / √(1 − β₂^c) + ε); plain Adam folds λ into the gradient instead,
    so its moments already hold it; with ``amsgrad`` v is the running maximum.
    """
    inner = unwrap_optimizer(optimizer)
    group = param_group_of(inner, param)
    state = inner.state[param]
    lr = float(group["lr"])
    beta1, beta2 = group["betas"]
    eps, weight_decay = group["eps"], group["weight_decay"]
    decoupled = isinstance(inner, torch.optim.AdamW) or group.get("decoupled_weight_decay", False)
    second = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    index = index.to(param.device)
    m = state["exp_avg"].index_select(dim, index)
    v = second.index_select(dim, index)
    shape = [1] * param.dim()
    shape[dim] = index.numel()
    c = steps.to(device=param.device, dtype=torch.float64)
    step_size = (lr / (1 - beta1**c)).to(param.dtype).reshape(shape)
    bias_correction2_sqrt = (1 - beta2**c).sqrt().to(param.dtype).reshape(shape)
    theta = before.to(param.dtype).clone()
    if decoupled and weight_decay != 0:
        theta.mul_(1 - lr * weight_decay)
    denom = (v.sqrt() / bias_correction2_sqrt).add_(eps)
    theta.sub_(step_size * m / denom)
    param.index_copy_(dim, index, theta)
