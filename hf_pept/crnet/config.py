"""``CRNetConfig``: a LLaMA configuration whose projections from layer 2 on are cross-layer low-rank residuals.

CR-Net (Kong et al. 2026, "Scaling Parameter-Efficient Training with Cross-Layer Low-Rank Structure",
arXiv 2509.18993) keeps the seven projections P ∈ {q, k, v, o, gate, up, down} of decoder layer 1 full-rank,
Y_1^P = X_1^P W_1^P, and builds each later one from the same projection's output in the previous layer:

    Y_l^P = sgn(β_l^P)(|β_l^P| + ε) · Y_{l−1}^P + X_l^P A_l^P B_l^P,   l = 2..L,

with A_l^P ∈ R^{h_in×r}, B_l^P ∈ R^{r×h_out} and one learnable scalar β_l^P per layer and projection. The
embeddings, the norms, RoPE, the attention core, SwiGLU and the output head are LLaMA's; every other field is
``LlamaConfig``'s.
"""

from __future__ import annotations

from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

# The projections of each decoder layer that carry a cross-layer chain, by module name (attention, then MLP).
CRNET_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# Default distance between layers whose full outputs are kept under recomputation: the paper's |𝒜| = L/8.
PAPER_CHECKPOINT_EVERY = 8


@strict
class CRNetConfig(LlamaConfig):
    """A :class:`transformers.LlamaConfig` plus CR-Net's rank r, ε, β's initial value and its recomputation.

    Checks at construction raise ``ValueError`` naming the bad value: r in [1, min(h_in, h_out)) of every
    projection, ε > 0, ``checkpoint_every`` ≥ 1, no biases (the paper's LLaMA has none, and a bias would be carried
    down the chain), and no attention dropout under ``recompute`` (backward would draw other masks).
    """

    model_type = "crnet"
    # The LLaMA tensor-parallel plan names nn.Linear weights that layers 2..L do not have.
    base_model_tp_plan = None

    rank: int | None = field(
        default=None,
        metadata={"help": "r: rank of every A_l (h_in×r), B_l (r×h_out) of layers 2..L; empty = hidden_size // 4."},
    )
    beta_eps: float = field(
        default=1e-6,
        metadata={"help": "ε in sgn(β)(|β| + ε): keeps every cross-layer scale at least ε away from 0."},
    )
    beta_init: float = field(
        default=2**-0.5,
        metadata={
            "help": "β's initial value (the paper does not state one). 1/√2 with the low-rank term at half a "
            "LLaMA projection's variance keeps every Y_l at the variance of a LLaMA projection at init."
        },
    )
    recompute: bool = field(
        default=False,
        metadata={
            "help": "CR-Net's recomputation: keep only the layer inputs, the codes X·A and full outputs Y every "
            "checkpoint_every layers; rebuild the other Y in backward by inverting the cross-layer relation."
        },
    )
    checkpoint_every: int = field(
        default=PAPER_CHECKPOINT_EVERY,
        metadata={"help": "Layers between kept full outputs Y under recompute (the paper: every 8th, L among them)."},
    )
    min_inverse_scale: float = field(
        default=1e-2,
        metadata={
            "help": "Under recompute, a layer whose |scale| is below this keeps Y_{l−1} instead of inverting "
            "(division by a tiny scale amplifies rounding)."
        },
    )

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.rank is None:
            self.rank = max(1, self.hidden_size // 4)
        self.check_crnet()

    def projection_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module name: (h_in, h_out)}`` of each projection of a decoder layer."""
        d, f = self.hidden_size, self.intermediate_size
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads or self.num_attention_heads
        head_dim = self.head_dim or d // heads
        return {
            "q_proj": (d, heads * head_dim),
            "k_proj": (d, kv_heads * head_dim),
            "v_proj": (d, kv_heads * head_dim),
            "o_proj": (heads * head_dim, d),
            "gate_proj": (d, f),
            "up_proj": (d, f),
            "down_proj": (f, d),
        }

    def checkpoint_layers(self) -> tuple[int, ...]:
        """𝒜, 1-based: L, L − k, L − 2k, … down to 2 (k = ``checkpoint_every``; 1 ∉ 𝒜 as in the paper)."""
        layers = self.num_hidden_layers
        return tuple(sorted(range(layers, 1, -self.checkpoint_every)))

    def check_crnet(self) -> None:
        """Refuse a setting that cannot work, with a message naming the value."""
        rank = self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"CRNetConfig rank must be an integer >= 1 (or None for hidden_size // 4), got {rank!r}")
        name, (h_in, h_out) = min(self.projection_shapes().items(), key=lambda item: min(item[1]))
        if rank >= min(h_in, h_out):
            raise ValueError(
                f"CRNetConfig rank {rank} must be below the smaller side of every projection: {name} is "
                f"{h_in}×{h_out}, so rank must be < {min(h_in, h_out)} (A·B at r ≥ min(h_in, h_out) is not "
                f"low-rank); the paper uses hidden_size // 4 = {max(1, self.hidden_size // 4)}"
            )
        if not self.beta_eps > 0:
            raise ValueError(f"CRNetConfig beta_eps must be > 0 (it keeps the scale off 0), got {self.beta_eps!r}")
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"CRNetConfig checkpoint_every must be an integer >= 1, got {every!r}")
        if not self.min_inverse_scale >= 0:
            raise ValueError(f"CRNetConfig min_inverse_scale must be >= 0, got {self.min_inverse_scale!r}")
        if self.attention_bias or self.mlp_bias:
            raise ValueError(
                f"CR-Net has no biases (attention_bias={self.attention_bias!r}, mlp_bias={self.mlp_bias!r}): a bias "
                "would be summed down the cross-layer chain; use attention_bias=False, mlp_bias=False"
            )
        if self.recompute and self.attention_dropout:
            raise ValueError(
                f"CR-Net's recompute re-runs attention in backward, so it needs attention_dropout = 0, got "
                f"{self.attention_dropout!r}; use recompute=False for attention dropout"
            )


__all__ = ["CRNET_PROJECTIONS", "CRNetConfig", "PAPER_CHECKPOINT_EVERY"]
