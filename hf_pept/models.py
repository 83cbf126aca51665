"""LLaMA models of the sizes the ReLoRA and GaLore papers pre-train, built from a config (no download).

The same sizes also exist as CoLA models (:func:`cola_config`, :func:`build_cola`): LLaMA's shape with every
attention and MLP linear factorized at rank r (Liu et al. 2025, arXiv 2502.10940), as its paper pre-trains them,
and as CR-Net models (:func:`crnet_config`, :func:`build_crnet`): LLaMA's shape with the projections of layers
2..L built as cross-layer low-rank residuals (Kong et al. 2026, arXiv 2509.18993).

The shapes follow the GaLore paper's configurations (Zhao et al. 2024, Table 11 / the ``configs/llama_*.json`` of
its code), which the ReLoRA paper (Lialin et al. 2023, Table 1) also uses at 60M–350M: SwiGLU MLP, RMSNorm,
rotary embeddings, untied input and output embeddings. The parameter count in each name assumes their 32k T5
vocabulary; with our smaller built-in vocabulary the embeddings, and so the total, are smaller.

``tiny`` is not from a paper: it exists so that a test or a CPU smoke run trains in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

DEFAULT_MAX_POSITION_EMBEDDINGS = 1024


@dataclass(frozen=True)
class LlamaSize:
    """Shape of one named size: d_model, d_ff, heads, layers."""

    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_hidden_layers: int


MODEL_SIZES: dict[str, LlamaSize] = {
    "tiny": LlamaSize(hidden_size=64, intermediate_size=176, num_attention_heads=4, num_hidden_layers=2),
    "20m": LlamaSize(hidden_size=256, intermediate_size=688, num_attention_heads=4, num_hidden_layers=4),
    "60m": LlamaSize(hidden_size=512, intermediate_size=1376, num_attention_heads=8, num_hidden_layers=8),
    "130m": LlamaSize(hidden_size=768, intermediate_size=2048, num_attention_heads=12, num_hidden_layers=12),
    "350m": LlamaSize(hidden_size=1024, intermediate_size=2736, num_attention_heads=16, num_hidden_layers=24),
    "1b": LlamaSize(hidden_size=2048, intermediate_size=5461, num_attention_heads=32, num_hidden_layers=24),
}


def _check_size(size: str) -> LlamaSize:
    key = str(size).lower()
    if key not in MODEL_SIZES:
        raise ValueError(f"Unknown model size {size!r}; valid sizes are {list(MODEL_SIZES)} (or a local model path)")
    return MODEL_SIZES[key]


def llama_config(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    **overrides: Any,
):
    """A ``transformers.LlamaConfig`` of the named ``size`` (one of :data:`MODEL_SIZES`) for ``vocab_size`` tokens.

    ``overrides`` are passed to ``LlamaConfig`` last (e.g. ``num_hidden_layers=2``, ``attn_implementation="eager"``).
    """
    from transformers import LlamaConfig

    shape = _check_size(size)
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 2:
        raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
    if max_position_embeddings < 1:
        raise ValueError(f"max_position_embeddings must be >= 1, got {max_position_embeddings!r}")
    settings: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": shape.hidden_size,
        "intermediate_size": shape.intermediate_size,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers,
        "max_position_embeddings": max_position_embeddings,
        "hidden_act": "silu",
        "rms_norm_eps": 1e-6,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "use_cache": False,  # pre-training never reuses a KV cache; keeping it would only cost memory
    }
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_llama(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    **overrides: Any,
):
    """A randomly initialised ``LlamaForCausalLM`` of the named size (see :func:`llama_config`).

    ``seed`` makes the initialisation reproducible without touching the caller's global RNG state.
    """
    from transformers import LlamaForCausalLM

    config = llama_config(size, vocab_size, max_position_embeddings=max_position_embeddings, **overrides)
    return _seeded_model(LlamaForCausalLM, config, seed, dtype)


def is_model_size(name: str) -> bool:
    return str(name).lower() in MODEL_SIZES


def hidden_size(name_or_path: str) -> int:
    """d_model of a named size or of a local model folder / ``config.json`` (read locally, nothing downloaded)."""
    if is_model_size(name_or_path):
        return MODEL_SIZES[str(name_or_path).lower()].hidden_size
    path = os.fspath(name_or_path)
    check_model(path)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(path)  # a folder or the config file itself, as build_model reads it
    size = getattr(config, "hidden_size", None)
    if not isinstance(size, int):
        raise ValueError(f"Model {name_or_path!r} has no integer hidden_size in its config")
    return size


def check_model(name_or_path: str) -> None:
    """Refuse a model that is neither a size of :data:`MODEL_SIZES` nor a local folder or ``config.json``."""
    if not is_model_size(name_or_path) and not os.path.exists(os.fspath(name_or_path)):
        raise ValueError(
            f"Model {name_or_path!r} is neither a size {list(MODEL_SIZES)} nor a local folder or config.json "
            "(models are built locally; nothing is downloaded)"
        )


def build_model(
    name_or_path: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    seed: int | None = None,
    **overrides: Any,
):
    """A causal LM to pre-train: a named size, or a local folder / ``config.json`` file.

    A folder with weights (``*.safetensors`` / ``pytorch_model.bin``) is loaded to continue pre-training; a config
    alone is built with random weights. Nothing is downloaded: a name that is neither a size nor a local path is an
    error.
    """
    if is_model_size(name_or_path):
        return build_llama(name_or_path, vocab_size, max_position_embeddings, seed=seed, **overrides)
    from transformers import AutoConfig, AutoModelForCausalLM

    path = os.fspath(name_or_path)
    check_model(path)
    config_dir = os.path.dirname(path) if os.path.isfile(path) else path
    config = AutoConfig.from_pretrained(path if os.path.isfile(path) else config_dir, **overrides)
    has_weights = os.path.isdir(path) and any(
        name.endswith(".safetensors") or name == "pytorch_model.bin" for name in os.listdir(path)
    )
    if has_weights:
        return AutoModelForCausalLM.from_pretrained(path, config=config)
    if getattr(config, "vocab_size", vocab_size) != vocab_size:
        config.vocab_size = vocab_size
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        return AutoModelForCausalLM.from_config(config)


def _llama_shaped_settings(
    size: str, vocab_size: int, max_position_embeddings: int, model_type: str, what: str, **overrides: Any
) -> dict[str, Any]:
    """The config fields of a LLaMA-shaped architecture: a named size's LLaMA, or a local LLaMA / ``model_type``
    config (its vocabulary set to ``vocab_size``); ``what`` completes the refusal of any other model type."""
    if is_model_size(size):
        settings = llama_config(size, vocab_size, max_position_embeddings, **overrides).to_dict()
    else:
        path = os.fspath(size)
        check_model(path)
        from transformers import AutoConfig

        local = AutoConfig.from_pretrained(path, **overrides)
        if local.model_type not in ("llama", model_type):
            raise ValueError(f"{what} of a LLaMA; {size!r} is a {local.model_type!r} model")
        settings = local.to_dict()
        settings["vocab_size"] = vocab_size
        settings["max_position_embeddings"] = max(max_position_embeddings, settings["max_position_embeddings"])
    for key in ("model_type", "transformers_version", "architectures"):
        settings.pop(key, None)
    return settings


def _seeded_model(model_class, config, seed: int | None, dtype: torch.dtype | None):
    """``model_class(config)``, initialised under ``seed`` without touching the caller's RNG, cast to ``dtype``."""
    if seed is None:
        model = model_class(config)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = model_class(config)
    return model.to(dtype) if dtype is not None else model


def cola_config(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    rank: int | None = None,
    cola_m: bool = False,
    only_lr_act: bool | str | None = None,
    **overrides: Any,
):
    """A :class:`hf_pept.CoLAConfig` of a named size (LLaMA's shape, :func:`llama_config`), or of a local LLaMA or
    CoLA ``config.json`` / folder.

    ``rank`` None = a quarter of the hidden size (the paper's r: 128 at 60m, 512 at 1b) or, for a local CoLA
    config, its own rank. ``only_lr_act`` None / ``"auto"`` = the paper's choice for the size (off at 60m and
    130m, on at 350m and 1b) or the local config's value; ``"true"`` / ``"false"`` as for the command line.
    """
    from .cola.config import CoLAConfig, resolve_only_lr_act

    settings = _llama_shaped_settings(
        size, vocab_size, max_position_embeddings, CoLAConfig.model_type, "CoLA replaces the linears", **overrides
    )
    settings["cola_m"] = cola_m
    if rank is not None:
        settings["rank"] = rank
    chosen = resolve_only_lr_act(only_lr_act, size if is_model_size(size) else None)
    if chosen is not None:
        settings["only_lr_act"] = chosen
    return CoLAConfig(**settings)


def build_cola(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    **config_options: Any,
):
    """A randomly initialised :class:`hf_pept.CoLAForCausalLM` of the named size (see :func:`cola_config`)."""
    from .cola import CoLAForCausalLM

    config = cola_config(size, vocab_size, max_position_embeddings, **config_options)
    return _seeded_model(CoLAForCausalLM, config, seed, dtype)


def crnet_config(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    rank: int | None = None,
    recompute: bool = False,
    checkpoint_every: int | None = None,
    **overrides: Any,
):
    """A :class:`hf_pept.CRNetConfig` of a named size (LLaMA's shape, :func:`llama_config`), or of a local LLaMA or
    CR-Net ``config.json`` / folder. ``rank`` None = a quarter of the hidden size or the local config's rank;
    ``checkpoint_every`` None = the config's default (every 8th layer) or the local config's value."""
    from .crnet.config import CRNetConfig

    settings = _llama_shaped_settings(
        size,
        vocab_size,
        max_position_embeddings,
        CRNetConfig.model_type,
        "CR-Net rebuilds the projections",
        **overrides,
    )
    settings["recompute"] = bool(recompute)
    if rank is not None:
        settings["rank"] = rank
    if checkpoint_every is not None:
        settings["checkpoint_every"] = checkpoint_every
    return CRNetConfig(**settings)


def build_crnet(
    size: str,
    vocab_size: int,
    max_position_embeddings: int = DEFAULT_MAX_POSITION_EMBEDDINGS,
    seed: int | None = None,
    dtype: torch.dtype | None = None,
    **config_options: Any,
):
    """A randomly initialised :class:`hf_pept.CRNetForCausalLM` of the named size (see :func:`crnet_config`)."""
    from .crnet import CRNetForCausalLM

    config = crnet_config(size, vocab_size, max_position_embeddings, **config_options)
    return _seeded_model(CRNetForCausalLM, config, seed, dtype)


def count_parameters(model: torch.nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
