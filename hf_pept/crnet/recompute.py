"""CR-Net's recomputation: keep the layer inputs, the low-rank codes and a few full outputs; invert the rest.

Without it, autograd keeps, besides LLaMA's activations, every layer's seven incoming outputs Y_{l−1}^P (the
gradient of β_l^P is ⟨∂L/∂Y_l^P, Y_{l−1}^P⟩) and the codes z_l^P = X_l^P A_l^P. Block-level gradient
checkpointing does not help by itself: layer l's recomputation needs Y_{l−1}, which depends on every layer below
it. CR-Net (Kong et al. 2026, arXiv 2509.18993, its recomputation section) keeps

* every decoder layer's input (the residual stream, d values per token),
* every code z_l^P = X_l^P A_l^P of layers 2..L (7r values per token and layer),
* the full outputs Y_l^P only on a checkpoint set 𝒜 (``config.checkpoint_layers()``: L, L − k, …, down to 2),

and, walking down in backward, rebuilds each other Y by the exact inverse of the forward relation

    Y_{l−1}^P = (Y_l^P − z_l^P B_l^P) / (sgn(β_l^P)(|β_l^P| + ε)),

one r×h_out product per projection and step, computed in fp32. Each layer is then re-run with autograd on from
its input and Y_{l−1}, the recorded codes replayed in place of X·A (so A's product is not recomputed), and its
gradients — of the layer input, of the seven Y_{l−1} and of its parameters — flow to the layer below.

What the paper leaves open and we chose: the checkpoint set counts down from L in steps of
``checkpoint_every`` (the paper gives only |𝒜| = L/8, L ∈ 𝒜, 1 ∉ 𝒜); layer 1 (full-rank, nothing to invert) is
recomputed from its input alone; a layer whose scale |c_l^P| is below ``config.min_inverse_scale`` keeps its
Y_{l−1} in forward instead of being inverted (a scale near ε would amplify rounding by 1/|c|); the walk carries
the rebuilt Y in fp32 and hands them to each recomputation in the dtype the forward produced.

Mechanism: the whole decoder stack runs as one :class:`torch.autograd.Function` whose forward runs without a graph
and records the codes on a tape, and whose ``save_for_backward`` holds exactly the tensors listed above (so
``torch.autograd.graph.saved_tensors_hooks`` sees what is kept). The module tree and state-dict keys are those of
plain CR-Net, so a checkpoint loads with either setting.
"""

from __future__ import annotations

import torch

from ..low_rank_replay import Tape, active_tape, autocast_state, low_rank_product


def _tape(saved: tuple[torch.Tensor, ...] | None = None) -> Tape:
    return Tape(saved, owner="CR-Net recomputation", item="code")


# z = X·A of a CR-Net projection (``weight_a`` is Aᵀ, r×h_in): recorded or replayed under recompute
low_rank_code = low_rank_product


def _run_recording(run_layer, index, hidden, previous):
    with active_tape(_tape()) as tape:
        hidden, outputs = run_layer(index, hidden, previous)
    return hidden, outputs, tape.values


class _CrossLayerStack(torch.autograd.Function):
    """The decoder stack under CR-Net's recomputation (see the module docstring)."""

    @staticmethod
    def forward(ctx, stack, hidden_states: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        ctx.stack, ctx.params = stack, params  # params are inputs so that their gradients flow; not saved
        ctx.autocast = autocast_state(hidden_states.device.type)
        checkpoints = set(stack.checkpoints)
        saved: list[torch.Tensor] = []
        layout: list[dict] = []  # per layer: where its input, codes, kept Y and kept Y_{l−1} sit in ``saved``

        def keep(tensors) -> tuple[int, int]:
            saved.extend(tensors)
            return len(saved) - len(tensors), len(saved)

        previous = None
        for index in range(stack.num_layers):
            entry = {"input": keep([hidden_states])}
            if previous is not None and stack.smallest_scale(index) < stack.min_inverse_scale:
                entry["previous"] = keep(previous)
            hidden_states, outputs, codes = _run_recording(stack.run_layer, index, hidden_states, previous)
            entry["codes"] = keep(codes)
            if index + 1 in checkpoints:
                entry["outputs"] = keep(outputs)
            layout.append(entry)
            previous = outputs
        ctx.output_dtypes = [y.dtype for y in previous]
        ctx.layout = layout
        ctx.save_for_backward(*saved)
        return hidden_states

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        stack, layout = ctx.stack, ctx.layout
        saved = ctx.saved_tensors
        grad_params: list[torch.Tensor | None] = [None] * len(ctx.params)
        grad_hidden, grad_outputs = grad_output, [None] * len(ctx.output_dtypes)
        carried = None  # Y_l of the layer being handled, fp32, rebuilt by the layer above
        grad_input = None
        for index in reversed(range(stack.num_layers)):
            entry = {key: saved[start:end] for key, (start, end) in layout[index].items()}
            if "outputs" in entry:
                carried = [y.to(torch.promote_types(y.dtype, torch.float32)) for y in entry["outputs"]]
            previous = None
            if index > 0:
                if "previous" in entry:
                    rebuilt = list(entry["previous"])
                else:
                    rebuilt = stack.invert(index, carried, entry["codes"])
                previous = [y.to(dtype).detach().requires_grad_(True) for y, dtype in zip(rebuilt, ctx.output_dtypes)]
                carried = rebuilt
            (layer_input,) = entry["input"]
            needs_input = index > 0 or ctx.needs_input_grad[1]
            layer_input = layer_input.detach().requires_grad_(needs_input)
            with active_tape(_tape(entry["codes"])) as tape, torch.enable_grad(), torch.autocast(**ctx.autocast):
                hidden, outputs = stack.run_layer(index, layer_input, previous)
            if tape.position != len(tape.values):
                raise RuntimeError(
                    f"CR-Net recomputation replayed {tape.position} of {len(tape.values)} codes of layer "
                    f"{index + 1}: the layer ran differently in backward than in forward"
                )
            roots, root_grads = [hidden], [grad_hidden]
            for output, grad in zip(outputs, grad_outputs):
                if grad is not None:
                    roots.append(output)
                    root_grads.append(grad)
            param_slots = [i for i in stack.param_indices(index) if ctx.needs_input_grad[2 + i]]
            targets = ([layer_input] if needs_input else []) + (previous or []) + [ctx.params[i] for i in param_slots]
            grads = list(torch.autograd.grad(roots, targets, root_grads, allow_unused=True))
            layer_grad_input = grads.pop(0) if needs_input else None
            grad_outputs = [grads.pop(0) for _ in previous] if previous is not None else []
            for slot, grad in zip(param_slots, grads):
                grad_params[slot] = grad if grad_params[slot] is None else grad_params[slot] + grad
            grad_hidden = layer_grad_input
            grad_input = layer_grad_input
        return (None, grad_input, *grad_params)


class RecomputedStack:
    """What :class:`_CrossLayerStack` needs of a decoder stack.

    ``run_layer(index, hidden, previous) -> (hidden, outputs)`` runs decoder layer ``index`` (0-based) on its input
    and the seven previous outputs (None for layer 1); ``layers[index].invert(outputs, codes)`` rebuilds the
    previous outputs in fp32; ``smallest_scale(index)`` is min_P |c_l^P|.
    """

    def __init__(self, layers, run_layer, checkpoints, min_inverse_scale: float):
        self.layers, self.run_layer = layers, run_layer
        self.num_layers = len(layers)
        self.checkpoints = tuple(checkpoints)
        self.min_inverse_scale = min_inverse_scale
        self.params: list[torch.Tensor] = []
        self._ranges: list[range] = []
        for layer in layers:
            start = len(self.params)
            self.params.extend(p for p in layer.parameters() if p.requires_grad)
            self._ranges.append(range(start, len(self.params)))

    def param_indices(self, index: int) -> range:
        return self._ranges[index]

    def smallest_scale(self, index: int) -> float:
        return self.layers[index].smallest_scale()

    def invert(self, index: int, outputs, codes):
        return self.layers[index].invert(outputs, codes)

    def __call__(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return _CrossLayerStack.apply(self, hidden_states, *self.params)


__all__ = ["RecomputedStack", "low_rank_code"]
