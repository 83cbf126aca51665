"""CoLA's side of :mod:`hf_pept.memory`: its config for a model, its parameter shapes and its saved activations.

Parameters (Liu et al. 2025, arXiv 2502.10940, §3.4): each factorized linear W ∈ R^{m×n} becomes A (r×n) and
B (m×r), r(m + n) values; embeddings, norms and the output head are LLaMA's. Per decoder layer of hidden size d and
MLP width f (multi-head attention) that is r(11d + 3f) against LLaMA's 4d² + 3d·f; at the paper's 1B shape
(d = 2048, f = 5461, 24 layers, r = 512, 32k vocabulary, untied head) 609.3M parameters against 1339.1M.

Activations, per token of one decoder layer, in the activation dtype a (counted against the saved-tensor bytes of
built models in ``tests/cola/test_cola_memory.py``):

* CoLA: LLaMA's layer (:func:`hf_pept.memory.llama_layer_activation_bytes`: every full-width tensor is still
  produced, as B σ(A x), and saved by the op that consumes it) plus, per factorized linear, z = A x (for σ's
  backward) and σ(z) (for B's), 14r values; with ``only_lr_act`` SwiGLU's SiLU and its saved f-wide input are gone.
* CoLA-M: the layer input (d values, fp32 residual stream) and the seven z (7r values) per layer, plus, at the
  peak, the larger of the head's saved tensors (alive until backward reaches the last layer) and what the last
  layer's recomputation adds to what it keeps (one CoLA layer minus its input and its z, which it reuses).
* Block-level gradient checkpointing on CoLA (``cola_m=False``): as for LLaMA, each layer's input plus one layer.
"""

from __future__ import annotations

from typing import Any

from .config import COLA_LINEAR_MODULES, CoLAConfig

NUM_COLA_LINEARS = len(COLA_LINEAR_MODULES)


def cola_model_config(model: Any, vocab_size: int, seq_len: int, rank: int | None = None, **options: Any):
    """The ``CoLAConfig`` that ``hf-pept train --method cola`` / ``cola-m`` builds for ``model`` (a size, a local
    LLaMA / CoLA config, or a config object); ``options`` may carry ``only_lr_act`` and ``cola_m``, others are
    ignored (so a whole run's options can be passed)."""
    from ..models import DEFAULT_MAX_POSITION_EMBEDDINGS, cola_config

    cola_m = bool(options.get("cola_m", False))
    only_lr_act = options.get("only_lr_act")
    if hasattr(model, "hidden_size"):  # a config object
        settings = {k: v for k, v in model.to_dict().items() if k not in ("model_type", "transformers_version")}
        settings["cola_m"] = cola_m
        if rank is not None:
            settings["rank"] = rank
        if isinstance(only_lr_act, bool) or only_lr_act in ("true", "false"):
            settings["only_lr_act"] = only_lr_act in (True, "true")
        return CoLAConfig(**settings)
    max_positions = max(seq_len, DEFAULT_MAX_POSITION_EMBEDDINGS)
    return cola_config(str(model), vocab_size, max_positions, rank=rank, cola_m=cola_m, only_lr_act=only_lr_act)


def cola_parameter_shapes(config: CoLAConfig) -> list:
    """Every parameter of ``CoLAForCausalLM(config)`` in ``named_parameters`` order, from the config alone."""
    from ..memory import ParamShape, llama_parameter_shapes

    shapes = []
    for param in llama_parameter_shapes(config):
        if param.module in COLA_LINEAR_MODULES and param.name.endswith(".weight"):
            m, n = param.shape
            prefix = param.name.removesuffix(".weight")
            shapes.append(ParamShape(f"{prefix}.weight_a", (config.rank, n), param.module))
            shapes.append(ParamShape(f"{prefix}.weight_b", (m, config.rank), param.module))
        else:
            shapes.append(param)
    return shapes


def cola_layer_activation_bytes(config: CoLAConfig, activation_bytes_per_value: int = 4) -> int:
    """Bytes per token saved in one CoLA decoder layer (not under CoLA-M): LLaMA's, + 14r, − f with only_lr_act."""
    from ..memory import llama_layer_activation_bytes

    low_rank = 2 * NUM_COLA_LINEARS * config.rank  # z = A x and σ(z) of each factorized linear
    dropped = config.intermediate_size if config.only_lr_act else 0  # SwiGLU's SiLU input
    return llama_layer_activation_bytes(config, activation_bytes_per_value) + (low_rank - dropped) * (
        activation_bytes_per_value
    )


def cola_activation_bytes(
    config: CoLAConfig,
    batch_size: int,
    seq_len: int,
    activation_bytes_per_value: int = 4,
    gradient_checkpointing: bool = False,
) -> int:
    """Bytes kept for backward in one training step of ``CoLAForCausalLM(config)`` (see the module docstring)."""
    from ..memory import head_activation_bytes

    if config.cola_m and gradient_checkpointing:
        raise ValueError(
            "CoLA-M already recomputes every decoder layer; gradient checkpointing on top would recompute twice"
        )
    tokens, layers = batch_size * seq_len, config.num_hidden_layers
    one_layer = tokens * cola_layer_activation_bytes(config, activation_bytes_per_value)
    head = tokens * head_activation_bytes(config)
    if config.cola_m:
        kept = tokens * (config.hidden_size * 4 + NUM_COLA_LINEARS * config.rank * activation_bytes_per_value)
        return layers * kept + max(head, one_layer - kept)
    if gradient_checkpointing:
        return layers * tokens * config.hidden_size * 4 + one_layer + head
    return layers * one_layer + head


__all__ = ["cola_activation_bytes", "cola_layer_activation_bytes", "cola_model_config", "cola_parameter_shapes"]
