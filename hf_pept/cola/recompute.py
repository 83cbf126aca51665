"""CoLA-M: the recompute policy that keeps only a decoder layer's input and its low-rank activations for backward.

CoLA-M (Liu et al. 2025, arXiv 2502.10940, §4.2 "CoLA Enables Efficient Checkpointing") uses the bottleneck of
each CoLA linear x ↦ B σ(A x): the r-dimensional activation is far smaller than the full-width tensors around it,
so it is the one worth keeping; everything full-width is recomputed in backward from it.

What is kept, per token and decoder layer of width d: the layer input (d values) and the seven pre-activations
z = A x (r values each, q/k/v/o/gate/up/down) — d + 7r values instead of CoLA's ≈ 11d + 4f + 14r (f the MLP
width; 3f with ``only_lr_act``). The paper phrases the kept tensors as the σ(A x) outputs; we keep z = A x, of the same size, because
σ'(z) needs z (SiLU cannot be inverted from its output), so keeping σ(z) would force A x to be recomputed.

What is recomputed in backward, once per layer (no double recomputation): the norms, σ(z) (elementwise), every
B·σ(z), RoPE, the attention core and SwiGLU's product — not the A x products, whose saved results are replayed.
So the extra forward work is about half of the layer's linear FLOPs (the B halves) plus attention, against the
whole forward for block-level gradient checkpointing.

Mechanism: each layer runs as one :class:`torch.autograd.Function` (:func:`checkpointed_layer`) whose forward
runs the layer without building a graph while a tape records every z, and saves the layer input and the recorded
z with ``save_for_backward`` (so ``torch.autograd.graph.saved_tensors_hooks`` sees exactly what is kept). Its
backward re-runs the layer with autograd on, the tape replaying each z in place of A x (:mod:`hf_pept.low_rank_replay`,
whose backward is that of x ↦ A x), and returns the gradients of the layer input and of the layer's parameters.
The module tree and state-dict keys are those of plain CoLA.
"""

from __future__ import annotations

import torch

from ..low_rank_replay import Tape, active_tape, autocast_state, low_rank_product


def _tape(saved: tuple[torch.Tensor, ...] | None = None) -> Tape:
    return Tape(saved, owner="CoLA-M recomputation", item="low-rank activation")


class _CoLAMLayer(torch.autograd.Function):
    """One decoder layer under CoLA-M: forward without a graph (z recorded), backward by replayed recomputation."""

    @staticmethod
    def forward(ctx, layer_forward, hidden_states: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.layer_forward = layer_forward
        ctx.params = params  # inputs so that their gradients flow back; kept by the module anyway, not saved
        ctx.autocast = autocast_state(hidden_states.device.type)
        with active_tape(_tape()) as tape:
            output = layer_forward(hidden_states)
        ctx.save_for_backward(hidden_states, *tape.values)
        return output

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        hidden_states, *saved_z = ctx.saved_tensors
        inputs = hidden_states.detach().requires_grad_(ctx.needs_input_grad[1])
        with active_tape(_tape(tuple(saved_z))) as tape, torch.enable_grad(), torch.autocast(**ctx.autocast):
            output = ctx.layer_forward(inputs)
        if tape.position != len(tape.values):
            raise RuntimeError(
                f"CoLA-M recomputation replayed {tape.position} of {len(tape.values)} low-rank activations: the "
                "layer ran differently in backward than in forward"
            )
        wanted = [i for i, needed in enumerate(ctx.needs_input_grad[2:]) if needed]
        targets = ([inputs] if ctx.needs_input_grad[1] else []) + [ctx.params[i] for i in wanted]
        grads = torch.autograd.grad(output, targets, grad_output, allow_unused=True) if targets else ()
        grads = list(grads)
        grad_input = grads.pop(0) if ctx.needs_input_grad[1] else None
        grad_params: list[torch.Tensor | None] = [None] * len(ctx.params)
        for i, grad in zip(wanted, grads):
            grad_params[i] = grad
        return (None, grad_input, *grad_params)


def checkpointed_layer(layer_forward, hidden_states: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``layer_forward(hidden_states)`` under CoLA-M: only ``hidden_states`` and each z = A x are kept for backward.

    ``params`` are the layer's parameters (their gradients are returned through this function); the layer must
    call :func:`low_rank_product` for each A x and run the same way twice (no dropout, no KV cache).
    """
    return _CoLAMLayer.apply(layer_forward, hidden_states, *params)


__all__ = ["checkpointed_layer", "low_rank_product"]
