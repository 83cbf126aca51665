"""``CRNetForCausalLM``: LLaMA whose projections from layer 2 on are cross-layer low-rank residuals (CR-Net).

For each projection P ∈ {q, k, v, o, gate, up, down} of decoder layer l, with X_l^P that projection's own input
(the normed hidden state for q, k, v, gate, up; the attention output for o; the SwiGLU product for down)
(Kong et al. 2026, arXiv 2509.18993, its method section):

    Y_1^P = X_1^P W_1^P                                             (layer 1 full-rank, ``weight``: h_out×h_in)
    Y_l^P = c_l^P · Y_{l−1}^P + (X_l^P A_l^P) B_l^P,   c_l^P = sgn(β_l^P)(|β_l^P| + ε),   l = 2..L

with A_l^P (``weight_a``, stored as Aᵀ: r×h_in), B_l^P (``weight_b``, stored as Bᵀ: h_out×r) and the scalar β_l^P
(``beta``). Y_{l−1}^P is the *same projection's* output in block l−1 (q feeds q, down feeds down), not the residual
stream; for k and q it is the projection output before RoPE. The chain is position-wise, so the KV cache of
generation works as in LLaMA. Parameters per layer l ≥ 2: r(11d + 3f) + 7 for hidden size d, MLP width f
(multi-head attention), against 4d² + 3d·f for layer 1.

What the paper leaves open and we chose:

* sgn(0): the paper's sgn(β)(|β| + ε) is 0 at β = 0; we take sgn(0) = +1, so c = β + ε·sgn⁺(β) with |c| ≥ ε
  everywhere and ∂c/∂β = 1.
* Initialisation (the paper states none): W_1 as LLaMA, N(0, σ²) with σ = ``initializer_range``; β_l = 1/√2
  (``beta_init``); A and B from N(0, s²) with s = (σ²/(2r))^{1/4}, so Var[(AB)_ij] = r·s⁴ = σ²/2. With independent
  terms Var[Y_l] = c²·Var[Y_{l−1}] + ½·Var[X W] = Var[X W]: every layer's projections start at the variance of a
  LLaMA projection, however deep the stack (β = 1 would make it grow linearly with depth), and consecutive layers'
  outputs start correlated (1/√2), the paper's premise.
* No biases (refused by the config).

``config.recompute`` changes only what is kept for backward (:mod:`hf_pept.crnet.recompute`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.cache_utils import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_outputs import BaseModelOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaForCausalLM,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)
from transformers.utils import logging
from transformers.utils.deprecation import deprecate_kwarg

from .config import CRNetConfig
from .recompute import RecomputedStack, low_rank_code

logger = logging.get_logger(__name__)


class CRNetProjection(nn.Module):
    """One projection P of layer l: Y_1 = X W (``first``), else Y_l = c_l·Y_{l−1} + (X A) B."""

    def __init__(self, in_features: int, out_features: int, rank: int, first: bool, eps: float, beta_init: float):
        super().__init__()
        self.in_features, self.out_features, self.rank, self.first, self.eps = (
            in_features,
            out_features,
            rank,
            first,
            eps,
        )
        self.beta_init = beta_init
        if first:
            self.weight = nn.Parameter(torch.empty(out_features, in_features))
            self.weight_names = ("weight",)
        else:
            self.weight_a = nn.Parameter(torch.empty(rank, in_features))  # Aᵀ: r×h_in
            self.weight_b = nn.Parameter(torch.empty(out_features, rank))  # Bᵀ: h_out×r
            self.beta = nn.Parameter(torch.empty(()))
            self.weight_names = ("weight_a", "weight_b")

    def scale(self) -> torch.Tensor:
        """c = sgn(β)(|β| + ε) with sgn(0) = +1, i.e. β ± ε (∂c/∂β = 1)."""
        return self.beta + torch.where(self.beta >= 0, self.eps, -self.eps)

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        if self.first:
            return F.linear(x, self.weight)
        if previous is None:
            raise ValueError("a CR-Net projection of layer 2 or later needs the previous layer's output Y_{l−1}")
        return self.scale() * previous + F.linear(low_rank_code(x, self.weight_a), self.weight_b)

    def invert(self, output: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        """Y_{l−1} = (Y_l − z B) / c in fp32 (or wider), z = X A the code recorded in forward."""
        dtype = _inversion_dtype(output.dtype)
        low_rank = F.linear(code.to(dtype), self.weight_b.to(dtype))
        return (output.to(dtype) - low_rank) / self.scale().detach().to(dtype)

    def extra_repr(self) -> str:
        kind = "full-rank" if self.first else f"rank={self.rank}"
        return f"in_features={self.in_features}, out_features={self.out_features}, {kind}"


def _inversion_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _projection(config: CRNetConfig, layer_idx: int, name: str) -> CRNetProjection:
    h_in, h_out = config.projection_shapes()[name]
    return CRNetProjection(h_in, h_out, config.rank, layer_idx == 0, config.beta_eps, config.beta_init)


class CRNetAttention(nn.Module):
    """LLaMA attention (RoPE, GQA, the attention interface) on CR-Net projections; returns o and (q, k, v, o)."""

    def __init__(self, config: CRNetConfig, layer_idx: int):
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        self.q_proj = _projection(config, layer_idx, "q_proj")
        self.k_proj = _projection(config, layer_idx, "k_proj")
        self.v_proj = _projection(config, layer_idx, "v_proj")
        self.o_proj = _projection(config, layer_idx, "o_proj")

    def forward(self, hidden_states, previous, position_embeddings, attention_mask=None, cache=None, **kwargs):
        prev_q, prev_k, prev_v, prev_o = previous if previous is not None else (None,) * 4
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        q = self.q_proj(hidden_states, prev_q)
        k = self.k_proj(hidden_states, prev_k)
        v = self.v_proj(hidden_states, prev_v)
        query_states = q.view(hidden_shape).transpose(1, 2)
        key_states = k.view(hidden_shape).transpose(1, 2)
        value_states = v.view(hidden_shape).transpose(1, 2)
        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)
        if cache is not None:
            key_states, value_states = cache.update(key_states, value_states, self.layer_idx, kwargs=kwargs)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, _ = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )
        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        o = self.o_proj(attn_output, prev_o)
        return o, (q, k, v, o)


class CRNetMLP(nn.Module):
    """SwiGLU down(act(gate(x)) ⊙ up(x)) on CR-Net projections; returns down and (gate, up, down)."""

    def __init__(self, config: CRNetConfig, layer_idx: int):
        super().__init__()
        self.gate_proj = _projection(config, layer_idx, "gate_proj")
        self.up_proj = _projection(config, layer_idx, "up_proj")
        self.down_proj = _projection(config, layer_idx, "down_proj")
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x, previous):
        prev_gate, prev_up, prev_down = previous if previous is not None else (None,) * 3
        gate = self.gate_proj(x, prev_gate)
        up = self.up_proj(x, prev_up)
        down = self.down_proj(self.act_fn(gate) * up, prev_down)
        return down, (gate, up, down)


class CRNetDecoderLayer(nn.Module):
    """A LLaMA pre-norm block whose seven projection outputs are carried to the next block."""

    def __init__(self, config: CRNetConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size
        self.self_attn = CRNetAttention(config, layer_idx)
        self.mlp = CRNetMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def projections(self) -> tuple[CRNetProjection, ...]:
        """q, k, v, o, gate, up, down: the order of ``forward``'s outputs and of the recorded codes."""
        attn, mlp = self.self_attn, self.mlp
        return (attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj)

    def forward(self, hidden_states, previous=None, **kwargs):
        """``(hidden, (Y^q, Y^k, Y^v, Y^o, Y^gate, Y^up, Y^down))``; ``previous`` is the last layer's tuple."""
        residual = hidden_states
        attn_out, attn_ys = self.self_attn(
            self.input_layernorm(hidden_states), None if previous is None else previous[:4], **kwargs
        )
        hidden_states = residual + attn_out
        residual = hidden_states
        mlp_out, mlp_ys = self.mlp(
            self.post_attention_layernorm(hidden_states), None if previous is None else previous[4:]
        )
        return residual + mlp_out, attn_ys + mlp_ys

    def smallest_scale(self) -> float:
        scales = [p.scale().detach().abs().min().item() for p in self.projections() if not p.first]
        return min(scales) if scales else float("inf")

    def invert(self, outputs, codes):
        """The seven Y_{l−1} (fp32) from this layer's Y_l and its recorded codes, in :meth:`projections` order."""
        return [proj.invert(y, z) for proj, y, z in zip(self.projections(), outputs, codes)]


_CHECKPOINTING_REFUSED = (
    "CR-Net's decoder layers pass seven projection outputs to the next layer, so block-level gradient checkpointing "
    "does not apply; use CRNetConfig(recompute=True), CR-Net's own recomputation (same gradients, fewer saved bytes)"
)


class CRNetPreTrainedModel(PreTrainedModel):
    config_class = CRNetConfig
    config: CRNetConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True  # so that the request reaches our refusal, not a generic one
    _no_split_modules = ["CRNetDecoderLayer"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, CRNetProjection):
            std = self.config.initializer_range
            if module.first:
                init.normal_(module.weight, mean=0.0, std=std)
            else:
                factor_std = (std**2 / (2 * module.rank)) ** 0.25  # Var[(AB)_ij] = r·s⁴ = σ²/2
                init.normal_(module.weight_a, mean=0.0, std=factor_std)
                init.normal_(module.weight_b, mean=0.0, std=factor_std)
                init.constant_(module.beta, module.beta_init)
        else:
            super()._init_weights(module)

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs):
        """Refused: see ``CRNetConfig.recompute`` for CR-Net's own recomputation."""
        raise ValueError(_CHECKPOINTING_REFUSED)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs):
        """Refused: see ``CRNetConfig.recompute`` for CR-Net's own recomputation."""
        raise ValueError(_CHECKPOINTING_REFUSED)


class CRNetModel(CRNetPreTrainedModel):
    """Embeddings, the CR-Net decoder stack (carrying the seven chains) and the final RMSNorm."""

    def __init__(self, config: CRNetConfig):
        super().__init__(config)
        config.check_crnet()
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(CRNetDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False
        self.post_init()

    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids=None,
        attention_mask=None,
        position_ids=None,
        cache=None,
        inputs_embeds=None,
        use_cache=None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        for unsupported in ("output_hidden_states", "output_attentions"):
            if kwargs.pop(unsupported, False):
                raise ValueError(f"CRNetModel does not return {unsupported.removeprefix('output_')}")
        kwargs.pop("return_dict", None)
        use_cache = self.config.use_cache if use_cache is None else use_cache
        recompute = self.config.recompute and self.training and torch.is_grad_enabled()
        if recompute and (use_cache or cache is not None):
            # The recomputation would write the KV cache a second time; training never reads it.
            logger.warning_once("CR-Net's recompute re-runs each layer in backward, so it trains without a KV cache.")
            use_cache, cache = False, None
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        if position_ids is None:
            past_seen_tokens = cache.get_seq_length() if cache is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)
        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        layers = self.layers[: self.config.num_hidden_layers]
        layer_kwargs = dict(
            attention_mask=causal_mask, position_embeddings=position_embeddings, cache=cache, position_ids=position_ids
        )
        layer_kwargs.update(kwargs)

        def run_layer(index, hidden, previous):
            return layers[index](hidden, previous, **layer_kwargs)

        if recompute:
            stack = RecomputedStack(
                list(layers), run_layer, self.config.checkpoint_layers(), self.config.min_inverse_scale
            )
            hidden_states = stack(hidden_states)
        else:
            previous = None
            for index in range(len(layers)):
                hidden_states, previous = run_layer(index, hidden_states, previous)
        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(last_hidden_state=hidden_states, cache=cache)


class CRNetForCausalLM(CRNetPreTrainedModel, GenerationMixin):
    """CR-Net language model: :class:`CRNetModel` + LLaMA's untied output head (forward: ``LlamaForCausalLM``'s)."""

    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}

    def __init__(self, config: CRNetConfig):
        super().__init__(config)
        self.model = CRNetModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    forward = LlamaForCausalLM.forward


__all__ = [
    "CRNetAttention",
    "CRNetDecoderLayer",
    "CRNetForCausalLM",
    "CRNetMLP",
    "CRNetModel",
    "CRNetPreTrainedModel",
    "CRNetProjection",
]
