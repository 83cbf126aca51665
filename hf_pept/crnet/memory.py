"""CR-Net's side of :mod:`hf_pept.memory`: its config for a model, its parameter shapes and its saved activations.

Parameters (Kong et al. 2026, arXiv 2509.18993): layer 1 is LLaMA's; each projection of layers 2..L holds A
(h_in×r), B (r×h_out) and one β, r(h_in + h_out) + 1 values; per layer r(11d + 3f) + 7 for hidden size d and MLP
width f (multi-head attention) against LLaMA's 4d² + 3d·f. At the paper's 1B shape (d = 2048, f = 5461, 24 layers,
32k vocabulary, untied head) r = 448 gives 582.4M parameters (the paper's 583M, −56.5 % of LLaMA-1B's 1339.1M) and
r = d/4 = 512 gives 639.7M.

Activations, per token of one decoder layer, in the activation dtype a (checked against the saved-tensor bytes of
built models in ``tests/crnet/test_crnet_memory.py``):

* plain autograd: layer 1 saves LLaMA's layer (:func:`hf_pept.memory.llama_layer_activation_bytes`); each layer
  l ≥ 2 adds the seven codes z = X·A (7r, kept for ∂B) and the incoming outputs Y_{l−1} kept for ∂β — of those,
  Y^v, Y^gate and Y^up are already kept by attention and SwiGLU, so q, k, o and down are new: q + k + 2d values.
* ``recompute``: every layer's input (d values, fp32 residual stream), the codes of layers 2..L (7r each) and the
  seven full outputs Y (Σ h_out) on each layer of the checkpoint set 𝒜; at the peak, besides these, the larger of
  the head's saved tensors (alive until backward reaches the last layer) and one layer's recomputation (a plain
  layer) together with the seven rebuilt Y carried in fp32.
* block-level gradient checkpointing is refused (CR-Net's layers exchange seven tensors).
"""

from __future__ import annotations

from typing import Any

from .config import CRNET_PROJECTIONS, CRNetConfig


def crnet_model_config(model: Any, vocab_size: int, seq_len: int, rank: int | None = None, **options: Any):
    """The ``CRNetConfig`` that ``hf-pept train --method crnet`` builds for ``model`` (a size, a local LLaMA / CR-Net
    config, or a config object); ``options`` may carry ``recompute`` and ``checkpoint_every``, others are ignored
    (so a whole run's options can be passed)."""
    from ..models import DEFAULT_MAX_POSITION_EMBEDDINGS, crnet_config

    recompute = bool(options.get("recompute", False))
    checkpoint_every = options.get("checkpoint_every")
    if hasattr(model, "hidden_size"):  # a config object
        settings = {k: v for k, v in model.to_dict().items() if k not in ("model_type", "transformers_version")}
        settings["recompute"] = recompute
        if rank is not None:
            settings["rank"] = rank
        if checkpoint_every is not None:
            settings["checkpoint_every"] = checkpoint_every
        return CRNetConfig(**settings)
    max_positions = max(seq_len, DEFAULT_MAX_POSITION_EMBEDDINGS)
    return crnet_config(
        str(model), vocab_size, max_positions, rank=rank, recompute=recompute, checkpoint_every=checkpoint_every
    )


def crnet_parameter_shapes(config: CRNetConfig) -> list:
    """Every parameter of ``CRNetForCausalLM(config)`` in ``named_parameters`` order, from the config alone."""
    from ..memory import ParamShape, llama_parameter_shapes

    shapes = []
    for param in llama_parameter_shapes(config):
        first_layer = param.name.startswith("model.layers.0.")
        if param.module in CRNET_PROJECTIONS and param.name.endswith(".weight") and not first_layer:
            h_out, h_in = param.shape
            prefix = param.name.removesuffix(".weight")
            shapes.append(ParamShape(f"{prefix}.weight_a", (config.rank, h_in), param.module))
            shapes.append(ParamShape(f"{prefix}.weight_b", (h_out, config.rank), param.module))
            shapes.append(ParamShape(f"{prefix}.beta", (), param.module))
        else:
            shapes.append(param)
    return shapes


def _output_widths(config: CRNetConfig) -> dict[str, int]:
    return {name: h_out for name, (_, h_out) in config.projection_shapes().items()}


def crnet_layer_activation_bytes(config: CRNetConfig, activation_bytes_per_value: int = 4) -> int:
    """Bytes per token saved in one CR-Net decoder layer l ≥ 2 under plain autograd: LLaMA's + 7r + q + k + 2d."""
    from ..memory import llama_layer_activation_bytes

    widths = _output_widths(config)
    incoming = widths["q_proj"] + widths["k_proj"] + widths["o_proj"] + widths["down_proj"]
    extra = len(CRNET_PROJECTIONS) * config.rank + incoming
    return llama_layer_activation_bytes(config, activation_bytes_per_value) + extra * activation_bytes_per_value


def crnet_activation_bytes(
    config: CRNetConfig,
    batch_size: int,
    seq_len: int,
    activation_bytes_per_value: int = 4,
    gradient_checkpointing: bool = False,
) -> int:
    """Bytes kept for backward in one training step of ``CRNetForCausalLM(config)`` (see the module docstring)."""
    from ..memory import head_activation_bytes, llama_layer_activation_bytes

    if gradient_checkpointing:
        raise ValueError(
            "CR-Net's decoder layers pass seven projection outputs on, so block-level gradient checkpointing does "
            "not apply; use recompute=True (CR-Net's own recomputation) instead"
        )
    a = activation_bytes_per_value
    tokens, layers = batch_size * seq_len, config.num_hidden_layers
    head = tokens * head_activation_bytes(config)
    later = tokens * crnet_layer_activation_bytes(config, a)
    if not config.recompute:
        return tokens * llama_layer_activation_bytes(config, a) + (layers - 1) * later + head
    all_outputs = sum(_output_widths(config).values())
    kept = tokens * (
        layers * config.hidden_size * 4
        + (layers - 1) * len(CRNET_PROJECTIONS) * config.rank * a
        + len(config.checkpoint_layers()) * all_outputs * a
    )
    return kept + max(head, later + tokens * all_outputs * 4)


__all__ = ["crnet_activation_bytes", "crnet_layer_activation_bytes", "crnet_model_config", "crnet_parameter_shapes"]
