"""``CoLAForCausalLM``: LLaMA with every attention and MLP linear replaced by CoLA's low-rank auto-encoder.

Each linear x ↦ W x (W ∈ R^{m×n}) becomes (Liu et al. 2025, arXiv 2502.10940, §3.2)

    h = B σ(A x) (+ b),    A ∈ R^{r×n} (``weight_a``),  B ∈ R^{m×r} (``weight_b``),  σ = ``config.hidden_act``

with r(m + n) parameters and multiply-adds per token instead of m·n (§3.4 "Computing Efficiency"; summed over a
decoder layer: r(11d + 3f) against 4d² + 3d·f for hidden size d and MLP width f). Attention and RoPE act on the reconstructed q, k, v as in LLaMA;
the embeddings, the RMSNorms and the output head are LLaMA's. With ``only_lr_act`` the MLP is
down(gate(x) ⊙ up(x)): SwiGLU's own SiLU is dropped, each factor pair already holding one σ.

Initialisation: A and B are drawn from N(0, σ₀²) with σ₀ = (r(m + n))^{-1/4}, so that Var[(BA)_ij] = r·σ₀⁴ =
1/(m + n), half of Xavier-normal's 2/(m + n) for a full W (the authors' published setting as our method notes record
it). Biases (off by default, as in LLaMA) start at zero, as transformers initialises LLaMA's: our choice. The
embeddings and head keep LLaMA's N(0, ``initializer_range``²).

Citations are by section title (the paper's table of contents): its body, and with it its equation numbers, could
not be retrieved for this implementation, so the formulas here are written from the method's description and each
is checked by a test against an independent reference (B·silu(A·x) written out, the closed-form parameter count).

CoLA-M (``config.cola_m``) changes only what is kept for backward (:mod:`hf_pept.cola.recompute`); the modules,
parameters and state-dict keys are the same, so a CoLA checkpoint loads as CoLA-M and back.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.models.llama.modeling_llama import (
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaMLP,
    LlamaModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)
from transformers.utils import logging

from .config import CoLAConfig
from .recompute import checkpointed_layer, low_rank_product

logger = logging.get_logger(__name__)


class CoLALinear(nn.Module):
    """x ↦ B σ(A x) + b: the low-rank auto-encoder that replaces one m×n linear (CoLA §3.2)."""

    weight_names = ("weight_a", "weight_b")  # the matrices an optimizer that projects linear weights (GaLore) sees

    def __init__(self, in_features: int, out_features: int, rank: int, activation: str, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.weight_a = nn.Parameter(torch.empty(rank, in_features))  # A: r×n, stored like an nn.Linear weight
        self.weight_b = nn.Parameter(torch.empty(out_features, rank))  # B: m×r
        self.bias = nn.Parameter(torch.empty(out_features)) if bias else None
        self.act_fn = ACT2FN[activation]

    @property
    def init_std(self) -> float:
        """σ₀ = (r(m + n))^{-1/4}: then Var[(BA)_ij] = 1/(m + n)."""
        return (self.rank * (self.in_features + self.out_features)) ** -0.25

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_fn(low_rank_product(x, self.weight_a)), self.weight_b, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def _cola_linear(config: CoLAConfig, in_features: int, out_features: int, bias: bool) -> CoLALinear:
    return CoLALinear(in_features, out_features, config.rank, config.hidden_act, bias)


class CoLAAttention(LlamaAttention):
    """LLaMA attention with q, k, v, o as CoLA linears; the attention core and RoPE are LLaMA's (its forward)."""

    def __init__(self, config: CoLAConfig, layer_idx: int):
        with torch.device("meta"):  # LLaMA's attributes without allocating its full-size projections
            super().__init__(config, layer_idx)
        d, q_width = config.hidden_size, config.num_attention_heads * self.head_dim
        kv_width = config.num_key_value_heads * self.head_dim
        self.q_proj = _cola_linear(config, d, q_width, config.attention_bias)
        self.k_proj = _cola_linear(config, d, kv_width, config.attention_bias)
        self.v_proj = _cola_linear(config, d, kv_width, config.attention_bias)
        self.o_proj = _cola_linear(config, q_width, d, config.attention_bias)


class CoLAMLP(LlamaMLP):
    """down(act(gate(x)) ⊙ up(x)) with CoLA linears; act is SiLU, or the identity with ``only_lr_act``."""

    def __init__(self, config: CoLAConfig):
        with torch.device("meta"):
            super().__init__(config)
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = _cola_linear(config, d, f, config.mlp_bias)
        self.up_proj = _cola_linear(config, d, f, config.mlp_bias)
        self.down_proj = _cola_linear(config, f, d, config.mlp_bias)
        if config.only_lr_act:
            self.act_fn = nn.Identity()


class CoLADecoderLayer(LlamaDecoderLayer):
    """A LLaMA decoder layer of CoLA linears. With ``config.cola_m`` and gradients on, it runs under CoLA-M."""

    def __init__(self, config: CoLAConfig, layer_idx: int):
        nn.Module.__init__(self)  # LlamaDecoderLayer.__init__ would build LLaMA's full-size sub-blocks
        self.hidden_size = config.hidden_size
        self.cola_m = config.cola_m
        self.self_attn = CoLAAttention(config, layer_idx)
        self.mlp = CoLAMLP(config)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
        if not (self.cola_m and self.training and torch.is_grad_enabled()):
            return super().forward(hidden_states, **kwargs)
        if self.gradient_checkpointing:
            raise ValueError(_CHECKPOINTING_REFUSED)
        if kwargs.get("cache") is not None:
            # The recomputation would write the KV cache a second time; training never reads it.
            logger.warning_once("CoLA-M recomputes each layer in backward, so it trains without a KV cache.")
            kwargs.update(cache=None, use_cache=False)
        layer_forward = functools.partial(super().forward, **kwargs)
        params = tuple(p for p in self.parameters() if p.requires_grad)
        if not params and not hidden_states.requires_grad:
            return layer_forward(hidden_states)
        return checkpointed_layer(layer_forward, hidden_states, params)


_CHECKPOINTING_REFUSED = (
    "CoLA-M already recomputes every decoder layer in backward (it keeps only the layer input and its low-rank "
    "activations); gradient checkpointing on top would recompute twice. Use cola_m=False with gradient "
    "checkpointing, or CoLA-M without it."
)


class CoLAPreTrainedModel(PreTrainedModel):
    config_class = CoLAConfig
    config: CoLAConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CoLADecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_record_outputs = {"hidden_states": CoLADecoderLayer, "attentions": CoLAAttention}

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, CoLALinear):
            init.normal_(module.weight_a, mean=0.0, std=module.init_std)
            init.normal_(module.weight_b, mean=0.0, std=module.init_std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Block-level activation (gradient) checkpointing, as for LLaMA; refused under CoLA-M, which already
        recomputes every layer (see :mod:`hf_pept.cola.recompute`)."""
        if self.config.cola_m:
            raise ValueError(_CHECKPOINTING_REFUSED)
        return super().activation_checkpointing_enable(activation_checkpointing_kwargs, **kwargs)


class CoLAModel(CoLAPreTrainedModel):
    """LLaMA's decoder stack of :class:`CoLADecoderLayer` (forward: ``LlamaModel.forward``)."""

    def __init__(self, config: CoLAConfig):
        super().__init__(config)
        config.check_cola()
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(CoLADecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    forward = LlamaModel.forward


class CoLAForCausalLM(CoLAPreTrainedModel, GenerationMixin):
    """CoLA language model: :class:`CoLAModel` + LLaMA's untied output head (forward: ``LlamaForCausalLM``'s)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: CoLAConfig):
        super().__init__(config)
        self.model = CoLAModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    forward = LlamaForCausalLM.forward


__all__ = [
    "CoLAAttention",
    "CoLADecoderLayer",
    "CoLAForCausalLM",
    "CoLALinear",
    "CoLAMLP",
    "CoLAModel",
    "CoLAPreTrainedModel",
]
