"""Record and replay the low-rank products z = x·Aᵀ of a layer, for recomputation schemes that keep them.

CoLA-M (:mod:`hf_pept.cola.recompute`) and CR-Net's recomputation (:mod:`hf_pept.crnet.recompute`) both keep, for
backward, the small r-dimensional products of their factored linears and recompute everything else. While a
:class:`Tape` is active (:func:`active_tape`), :func:`low_rank_product` records each product in forward, or, on a
replaying tape, returns the recorded one through :class:`_ReplayedProduct`, whose backward is that of x ↦ x·Aᵀ, so
A's product is never computed twice. With no tape active it is a plain ``F.linear``.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar

import torch
import torch.nn.functional as F


class Tape:
    """The products of one layer, in execution order: recorded in forward, replayed in backward.

    ``owner`` and ``item`` name them in the error raised when backward runs the layer differently (e.g.
    ``"CoLA-M recomputation"``, ``"low-rank activation"``).
    """

    def __init__(self, saved: tuple[torch.Tensor, ...] | None = None, owner: str = "", item: str = "product"):
        self.replaying = saved is not None
        self.values: list[torch.Tensor] = list(saved) if saved is not None else []
        self.position = 0
        self.owner, self.item = owner, item

    def next_saved(self) -> torch.Tensor:
        if self.position >= len(self.values):
            raise RuntimeError(
                f"{self.owner} asked for {self.item} {self.position + 1} of a layer that recorded "
                f"{len(self.values)}: the layer ran differently in backward than in forward"
            )
        value = self.values[self.position]
        self.position += 1
        return value


_ACTIVE_TAPE: ContextVar[Tape | None] = ContextVar("hf_pept_low_rank_tape", default=None)


@contextlib.contextmanager
def active_tape(tape: Tape):
    """Make ``tape`` the one :func:`low_rank_product` records to / replays from, for the ``with`` block."""
    token = _ACTIVE_TAPE.set(tape)
    try:
        yield tape
    finally:
        _ACTIVE_TAPE.reset(token)


def low_rank_product(x: torch.Tensor, weight_a: torch.Tensor) -> torch.Tensor:
    """z = x·Aᵀ (``weight_a`` r×n, stored like an nn.Linear weight), recorded or replayed under an active tape."""
    tape = _ACTIVE_TAPE.get()
    if tape is None:
        return F.linear(x, weight_a)
    if tape.replaying:
        return _ReplayedProduct.apply(x, weight_a, tape.next_saved())
    z = F.linear(x, weight_a)
    tape.values.append(z)
    return z


class _ReplayedProduct(torch.autograd.Function):
    """Returns the saved z without computing it; its backward is that of x·Aᵀ: ∂x = ∂z A, ∂A = ∂zᵀ x.

    The gradients are computed in z's dtype, as autocast's own product would (its inputs cast to the autocast
    dtype), and returned in the dtypes of x and A.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_a: torch.Tensor, saved_z: torch.Tensor) -> torch.Tensor:
        ctx.x_dtype = x.dtype
        ctx.save_for_backward(x.to(saved_z.dtype), weight_a)
        return saved_z

    @staticmethod
    def backward(ctx, grad_z: torch.Tensor):
        x, weight_a = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_z @ weight_a.to(grad_z.dtype)).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            flat_grad = grad_z.reshape(-1, grad_z.shape[-1])
            grad_weight = (flat_grad.t() @ x.reshape(-1, x.shape[-1])).to(weight_a.dtype)
        return grad_x, grad_weight, None


def autocast_state(device_type: str) -> dict:
    """The autocast settings in force now, to re-enter them in backward (``torch.autocast(**state)``)."""
    return {
        "device_type": device_type,
        "enabled": torch.is_autocast_enabled(device_type),
        "dtype": torch.get_autocast_dtype(device_type),
        "cache_enabled": torch.is_autocast_cache_enabled(),
    }


__all__ = ["Tape", "active_tape", "autocast_state", "low_rank_product"]
