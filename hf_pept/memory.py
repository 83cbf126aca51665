"""Memory estimate of a pre-training run per method: weights, gradients, optimizer state and activations (bytes).

Weights, gradients and optimizer state are counted tensor by tensor from the model's parameter shapes and the
optimizer's state layout, so they match a built model and a stepped optimizer exactly (``tests/test_memory.py``):

* full-rank AdamW: M and V per parameter (Kingma & Ba 2015), 2·numel, plus torch's one-element ``step`` tensor;
* LoRA / ReLoRA (Hu et al. 2021; Lialin et al. 2023): frozen W plus B (m×r) and A (r×n) per adapted layer, and a
  trainable copy of the embeddings and output head (peft ``modules_to_save``); gradients and AdamW state only for
  what trains. ReLoRA's figure is its low-rank phase (its full-rank warm start costs what full-rank costs);
* SwitchLoRA (Zhou et al. 2024): LoRA's layout plus, per adapted layer, C = min(m, n) candidate rows of A and C
  candidate columns of B, C·(m + n) values (at least m·n: twice W for a square layer), and six int64 counters per
  vector and two pointers. With ``offload_candidates`` (the default) the pools and counters are ``host_ram``, apart
  from device memory and not in ``total``; otherwise the pools count as weights (the counters stay on the host);
* GaLore (Zhao et al. 2024, Algorithm 1): full gradients, and for every projected weight (2-D, min(m, n) > r) the
  projector P (m×r, or Q n×r when m ≥ n for ``proj_type='std'``) plus moments of the projected gradient R (r×n or
  m×r) instead of m×n; 8-bit moments are one byte per value plus one fp32 absmax per block of 256; Adafactor keeps
  factored second moments (rows + columns, Shazeer & Stern 2018) and no first moment; layer-wise GaLore frees each
  gradient right after its layer's update, so at most one weight's gradient exists at a time;
* SST (Zhao et al. 2025, §4.5): every targeted W (m×n) is stored as U (m×k), Σ (k), V (n×k), k = min(m, n), plus
  the int64 indices of its k triplets, and W itself is emptied — the weights *grow* (2× W for a square matrix);
  gradients and AdamW state exist only for Σ and the r active columns of U and of V — the state *shrinks* to
  (m + n)·r + k per layer; embeddings and head as for LoRA. The estimate's ``note`` says both.
* architectures (``family="architecture"``, e.g. CoLA, Liu et al. 2025): full-rank AdamW on the architecture's own
  parameters, whose shapes, config and activations come from the method table's ``architecture`` entry
  (:class:`hf_pept.methods.ArchitectureLayout`; CoLA's in :mod:`hf_pept.cola.memory`: r(m + n) per factorized
  linear instead of m·n).

Activations are the tensors autograd saves for backward in a LLaMA decoder layer with SDPA attention (no s×s
attention matrix is stored), per token of hidden size d, MLP width f, vocabulary V:

    per layer: 11·d + 4·f   (two RMSNorms: input, normalized output and their fp32 copies; rotated q, k; v;
                             attention output; o_proj input; MLP: gate, up, SiLU(gate), SiLU(gate)·up)
    once:      the final RMSNorm (3·d), and the log-softmax of the logits (V) for the loss

in the activation dtype (fp32, or bf16 under mixed precision for the linear outputs). Gradient checkpointing keeps
only each layer's input (d per token per layer) plus one layer's activations during its recomputation. The formula
was checked against the saved-tensor bytes of the tiny and 20m models (``tests/test_memory.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from . import methods as method_table
from .knobs import LLAMA_LINEAR_MODULES
from .methods import StateLayout
from .models import MODEL_SIZES, llama_config

MB = 2**20
PAPER_VOCAB_SIZE = 32000  # the T5 vocabulary of the ReLoRA and GaLore papers' LLaMA runs
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
BLOCKSIZE_8BIT = 256
COMPONENTS = ("weights", "gradients", "optimizer_state", "activations")


@dataclass
class MemoryEstimate:
    """Bytes per component (the app's memory panel reads these four attributes)."""

    method: str
    weights: int
    gradients: int
    optimizer_state: int
    activations: int
    trained_params: int
    total_params: int
    host_ram: int = 0  # kept in host memory beside training, not on the device (SwitchLoRA's offloaded pools)
    note: str = ""  # what the four numbers do not say by themselves (SST: weights grow, state shrinks)

    @property
    def total(self) -> int:
        """Device memory: weights + gradients + optimizer state + activations (``host_ram`` is apart)."""
        return self.weights + self.gradients + self.optimizer_state + self.activations

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total": self.total}

    def mb(self) -> dict[str, float]:
        return {name: getattr(self, name) / MB for name in (*COMPONENTS, "total", "host_ram")}


@dataclass(frozen=True)
class ParamShape:
    name: str
    shape: tuple[int, ...]
    module: str  # last component of the owning module's name, e.g. "q_proj"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def llama_parameter_shapes(config) -> list[ParamShape]:
    """Every parameter of ``LlamaForCausalLM(config)`` in ``named_parameters`` order, from the config alone."""
    d, f, v = config.hidden_size, config.intermediate_size, config.vocab_size
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or d // heads
    shapes = [ParamShape("model.embed_tokens.weight", (v, d), "embed_tokens")]
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}"
        linears = [
            ("self_attn.q_proj", (heads * head_dim, d)),
            ("self_attn.k_proj", (kv_heads * head_dim, d)),
            ("self_attn.v_proj", (kv_heads * head_dim, d)),
            ("self_attn.o_proj", (d, heads * head_dim)),
            ("mlp.gate_proj", (f, d)),
            ("mlp.up_proj", (f, d)),
            ("mlp.down_proj", (d, f)),
        ]
        for name, shape in linears:
            shapes.append(ParamShape(f"{prefix}.{name}.weight", shape, name.rsplit(".", 1)[-1]))
            if getattr(config, "attention_bias", False) and name.startswith("self_attn"):
                shapes.append(ParamShape(f"{prefix}.{name}.bias", (shape[0],), name.rsplit(".", 1)[-1]))
            if getattr(config, "mlp_bias", False) and name.startswith("mlp"):
                shapes.append(ParamShape(f"{prefix}.{name}.bias", (shape[0],), name.rsplit(".", 1)[-1]))
        shapes.append(ParamShape(f"{prefix}.input_layernorm.weight", (d,), "input_layernorm"))
        shapes.append(ParamShape(f"{prefix}.post_attention_layernorm.weight", (d,), "post_attention_layernorm"))
    shapes.append(ParamShape("model.norm.weight", (d,), "norm"))
    if not config.tie_word_embeddings:
        shapes.append(ParamShape("lm_head.weight", (v, d), "lm_head"))
    return shapes


def _is_target(param: ParamShape, target_modules) -> bool:
    """peft / transformers matching: a module name equal to, or ending in, a target (or a regex full match)."""
    import re

    if param.name.endswith(".bias") or len(param.shape) != 2 or param.module in ("embed_tokens", "lm_head"):
        return False
    module_path = param.name.rsplit(".", 1)[0]
    for target in target_modules:
        if module_path == target or module_path.endswith("." + target) or re.fullmatch(target, module_path):
            return True
    return False


def _adam_state(numel: int, dtype_bytes: int) -> int:
    # exp_avg + exp_avg_sq in the parameter's dtype, and torch.optim.AdamW's fp32 one-element ``step`` tensor.
    return 2 * numel * dtype_bytes + 4


def _candidate_pool_bytes(param: ParamShape, rank: int, dtype_bytes: int) -> tuple[int, int]:
    """(pool bytes, counter bytes) of one SwitchLoRA layer: C·(m + n) candidates, 6·r + 2 int64 counters."""
    m, n = param.shape
    return min(m, n) * (m + n) * dtype_bytes, (6 * rank + 2) * 8


def _spectral_layer(param: ParamShape, rank: int) -> tuple[int, int, tuple[int, int, int]]:
    """(values stored instead of W, int64 index entries, trained tensors' numels (Σ, U_a, V_a)) of an SST layer."""
    m, n = param.shape
    k = min(m, n)
    return (m + n) * k + k, k, (k, m * rank, n * rank)


def _galore_state(param: ParamShape, rank: int, layout: StateLayout, proj_type: str, dtype_bytes: int) -> int:
    from .galore.projector import projection_side

    m, n = param.shape
    side = projection_side((m, n), proj_type)
    if side == "left":
        projector, lowrank = m * rank, (rank, n)
    elif side == "right":
        projector, lowrank = n * rank, (m, rank)
    else:  # both sides: P (m×r), Q (n×r), R = PᵀGQ is r×r
        projector, lowrank = (m + n) * rank, (rank, rank)
    numel = math.prod(lowrank)
    if layout.base == "adafactor":
        moments = (lowrank[0] + lowrank[1]) * dtype_bytes  # factored V̂: rows + columns, β1 = None
    elif layout.base == "adamw_8bit":
        moments = 2 * (numel + 4 * math.ceil(numel / BLOCKSIZE_8BIT))
    else:
        moments = 2 * numel * dtype_bytes
    residual_norm = 4 if layout.residual_norm else 0  # Fira's limiter: the last ‖S̃‖, one fp32 scalar
    return projector * dtype_bytes + moments + residual_norm


def _galore_full_rank_state(param: ParamShape, layout: StateLayout, dtype_bytes: int) -> int:
    if layout.base == "adafactor":
        if len(param.shape) >= 2:
            return (param.shape[0] + param.shape[1]) * dtype_bytes
        return param.numel * dtype_bytes
    return 2 * param.numel * dtype_bytes  # GaLore's AdamW keeps ``step`` as a Python int


def llama_layer_activation_bytes(config, activation_bytes_per_value: int = 4) -> int:
    """Bytes per token that autograd saves in one LLaMA decoder layer (11·d + 4·f values, see the module docstring)."""
    d, f = config.hidden_size, config.intermediate_size
    # RMSNorm works in fp32 whatever the autocast dtype (LlamaRMSNorm upcasts), so its 4·d are always 4 bytes.
    norms = 2 * 2 * d * 4
    return norms + (7 * d + 4 * f) * activation_bytes_per_value


def head_activation_bytes(config) -> int:
    """Bytes per token saved after the decoder layers: the final norm and the log-softmax of the fp32 logits."""
    return 3 * config.hidden_size * 4 + config.vocab_size * 4


def activation_bytes(
    config,
    batch_size: int,
    seq_len: int,
    activation_bytes_per_value: int = 4,
    gradient_checkpointing: bool = False,
) -> int:
    """Bytes autograd saves for backward in one forward pass of ``LlamaForCausalLM`` (see the module docstring)."""
    tokens = batch_size * seq_len
    per_layer = tokens * llama_layer_activation_bytes(config, activation_bytes_per_value)
    head = tokens * head_activation_bytes(config)
    if gradient_checkpointing:
        return config.num_hidden_layers * tokens * config.hidden_size * 4 + per_layer + head
    return config.num_hidden_layers * per_layer + head


def _config_for(model: Any, vocab_size: int, seq_len: int):
    if hasattr(model, "hidden_size"):
        return model
    if str(model).lower() in MODEL_SIZES:
        return llama_config(str(model), vocab_size, max_position_embeddings=max(seq_len, 1024))
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(model))
    if getattr(config, "model_type", None) != "llama":
        raise ValueError(f"Memory estimates cover LLaMA models; {model!r} is a {config.model_type!r} model")
    return config


def _resolve_precision(precision: str) -> str:
    if precision == "auto":
        import torch

        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16' or 'fp32', got {precision!r}")
    return precision


def estimate(
    method: str = "full",
    model: Any = "60m",
    vocab_size: int = PAPER_VOCAB_SIZE,
    seq_len: int = 256,
    batch_size: int = 8,
    rank: int | None = None,
    target_modules: list[str] | None = None,
    precision: str = "fp32",
    weight_dtype: str = "fp32",
    gradient_checkpointing: bool = False,
    proj_type: str = "std",
    offload_candidates: bool = True,
    **run_options: Any,
) -> MemoryEstimate:
    """Bytes of weights, gradients, optimizer state and activations of one training step.

    ``method`` is a name of the method table (:mod:`hf_pept.methods`), whose state layout says what is counted.
    ``model`` is a size name, a local model path or a ``LlamaConfig`` (for an architecture also its own config, e.g.
    a ``CoLAConfig``). ``rank`` None = the method's default for the model (a quarter of its hidden size, as
    ``hf-pept train``). ``precision`` is the activation precision (``bf16`` = mixed precision, as ``hf-pept train``
    uses on a GPU); ``weight_dtype`` the dtype of weights, gradients and optimizer state (``fp32`` under mixed
    precision; ``bf16`` for pure-bf16 training as in the GaLore paper's memory table). ``offload_candidates``
    (SwitchLoRA): its pools in host memory (``host_ram``) or beside the factors. Other ``hf-pept train`` options
    (``run_options``) are accepted; those of an architecture's option group (CoLA's ``only_lr_act``) shape its model,
    the rest do not change memory, so a whole run's options can be passed.
    """
    entry = method_table.get(method)
    if weight_dtype not in DTYPE_BYTES:
        raise ValueError(f"weight_dtype must be one of {list(DTYPE_BYTES)}, got {weight_dtype!r}")
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"rank must be a positive integer (or None for the method's default), got {rank!r}")
    architecture = entry.architecture
    if architecture is not None:  # a model of its own: its config, parameter shapes and activations
        config = architecture.model_config(model, vocab_size, seq_len, rank, **run_options)
    else:
        config = _config_for(model, vocab_size, seq_len)
    if rank is None:
        rank = entry.default_rank(config.hidden_size) or 0
    targets = list(target_modules) if target_modules else list(LLAMA_LINEAR_MODULES)
    wb = DTYPE_BYTES[weight_dtype]
    shapes = architecture.parameter_shapes(config) if architecture else llama_parameter_shapes(config)
    total_params = sum(p.numel for p in shapes)
    weights = total_params * wb
    gradients = optimizer = trained = host = 0
    note = ""
    layout = entry.state
    if layout.kind == "full":
        trained = total_params
        gradients = total_params * wb
        optimizer = sum(_adam_state(p.numel, wb) for p in shapes)
    elif layout.kind == "adapter":
        for p in shapes:
            if _is_target(p, targets):
                m, n = p.shape
                factors = (m * rank, rank * n)  # B (out×r), A (r×in)
                weights += sum(factors) * wb
                trained += sum(factors)
                optimizer += sum(_adam_state(numel, wb) for numel in factors)
                if layout.candidate_pools:
                    pools, counters = _candidate_pool_bytes(p, rank, wb)
                    host += counters + (pools if offload_candidates else 0)
                    weights += 0 if offload_candidates else pools
            elif p.module in ("embed_tokens", "lm_head"):
                weights += p.numel * wb  # the trainable copy beside the frozen original
                trained += p.numel
                optimizer += _adam_state(p.numel, wb)
        gradients = trained * wb
    elif layout.kind == "spectral":
        plain_weights = weights
        for p in shapes:
            if _is_target(p, targets):
                stored, indices, trained_tensors = _spectral_layer(p, rank)
                weights += (stored - p.numel) * wb + 8 * indices
                trained += sum(trained_tensors)
                optimizer += sum(_adam_state(numel, wb) for numel in trained_tensors)
            elif p.module in ("embed_tokens", "lm_head"):
                weights += p.numel * wb
                trained += p.numel
                optimizer += _adam_state(p.numel, wb)
        gradients = trained * wb
        full_state = sum(_adam_state(p.numel, wb) for p in shapes)
        note = (
            f"weights grow by {(weights - plain_weights) / MB:.1f} MB (U, Σ, V stored instead of W, plus the "
            f"trained copies of embeddings and head); optimizer state is {optimizer / MB:.1f} MB, "
            f"{100 * optimizer / full_state:.0f} % of full-rank AdamW's (Σ and the {rank} active vectors only)"
        )
    elif layout.kind == "galore":
        trained = total_params
        for p in shapes:
            if _is_target(p, targets) and min(p.shape) > rank:
                optimizer += _galore_state(p, rank, layout, proj_type, wb)
            else:
                optimizer += _galore_full_rank_state(p, layout, wb)
        gradients = (max(p.numel for p in shapes) if layout.layerwise else total_params) * wb
    else:
        raise ValueError(f"method {method!r} has a state layout {layout.kind!r} that hf_pept.memory does not count")
    activation_value_bytes = 2 if _resolve_precision(precision) == "bf16" else 4
    count_activations = architecture.activation_bytes if architecture else activation_bytes
    activations = count_activations(config, batch_size, seq_len, activation_value_bytes, gradient_checkpointing)
    return MemoryEstimate(method, weights, gradients, optimizer, activations, trained, total_params, host, note)


def format_estimates(estimates: list[MemoryEstimate]) -> str:
    """One line per method (MB); ``total`` is device memory, ``host RAM`` what stays in host memory beside it."""
    header = f"{'method':<18}{'weights':>10}{'gradients':>11}{'optimizer':>11}{'activations':>13}{'total':>10}"
    lines = [f"{header}{'host RAM':>10}  (MB)"]
    for e in estimates:
        mb = e.mb()
        lines.append(
            f"{e.method:<18}{mb['weights']:>10.1f}{mb['gradients']:>11.1f}{mb['optimizer_state']:>11.1f}"
            f"{mb['activations']:>13.1f}{mb['total']:>10.1f}{mb['host_ram']:>10.1f}"
        )
    lines += [f"{e.method}: {e.note}" for e in estimates if e.note]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``hf-pept estimate``: the four components for one or every method, without training."""
    from .run_args import LowRankArguments, RunArguments

    methods = method_table.method_names()
    run_default = {f.name: f.default for f in dataclasses.fields(RunArguments)}
    parser = argparse.ArgumentParser(prog="hf-pept estimate", description=main.__doc__)
    parser.add_argument("--method", default="all", help=f"One of {', '.join(methods)}, or 'all' (default).")
    parser.add_argument("--model", default="60m", help="Size name or local LLaMA folder (default: %(default)s).")
    parser.add_argument(
        "--vocab_size", type=int, default=PAPER_VOCAB_SIZE, help="Vocabulary size (default: the papers' %(default)s)."
    )
    parser.add_argument(
        "--seq_len", type=int, default=run_default["seq_len"], help="Tokens per sequence (default: %(default)s)."
    )
    parser.add_argument(
        "--batch_size", type=int, default=run_default["batch_size"], help="Sequences per micro-batch (%(default)s)."
    )
    rank_help = dataclasses.fields(LowRankArguments)[0].metadata["help"].replace("%", "%%")
    parser.add_argument("--rank", type=int, default=None, help=rank_help)
    parser.add_argument("--precision", default="fp32", choices=("auto", "bf16", "fp32"), help="Activation precision.")
    parser.add_argument(
        "--weight_dtype", default="fp32", choices=tuple(DTYPE_BYTES), help="Weights/gradients/optimizer dtype."
    )
    parser.add_argument("--gradient_checkpointing", action="store_true", help="Recompute activations in backward.")
    parser.add_argument("--recompute", action="store_true", help="CR-Net: its own recomputation (recompute=True).")
    args = parser.parse_args(argv)
    chosen = list(methods) if args.method == "all" else [method_table.get(args.method).name]
    options = {k: v for k, v in vars(args).items() if k != "method"}
    estimates = [estimate(method=m, **options) for m in chosen]
    config = _config_for(args.model, args.vocab_size, args.seq_len)
    rank = args.rank or method_table.get("galore").default_rank(config.hidden_size)
    print(
        f"{args.model} LLaMA, vocabulary {args.vocab_size}, batch {args.batch_size} × {args.seq_len} tokens, "
        f"rank {rank}{'' if args.rank else ' (hidden/4)'}, weights in {args.weight_dtype}, activations in "
        f"{_resolve_precision(args.precision)}"
    )
    print(format_estimates(estimates))
    return 0
