"""``CoLAConfig``: a LLaMA configuration whose attention and MLP linears are low-rank auto-encoders.

CoLA (Liu et al. 2025, "CoLA: Compute-Efficient Pre-Training of LLMs via Low-Rank Activation", arXiv 2502.10940,
§3.2) replaces every linear map x ↦ W x (W ∈ R^{m×n}) of the attention (q, k, v, o) and the MLP (gate, up, down)
by the bottleneck x ↦ B σ(A x) with A ∈ R^{r×n}, B ∈ R^{m×r} and a non-linearity σ between the factors; the
embeddings, the norms and the output head stay as in LLaMA. Every other field is ``LlamaConfig``'s, so a CoLA model
has exactly the shapes of the LLaMA it replaces, apart from the factors.
"""

from __future__ import annotations

from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig

# The factorized linears of each decoder layer, by module name.
COLA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# The paper's choice of ``only_lr_act`` per model size (its 60M/130M runs keep SwiGLU's SiLU, its 350M/1B/7B runs
# drop it). The paper has no tiny or 20m model: they follow its small sizes.
PAPER_ONLY_LR_ACT = {"tiny": False, "20m": False, "60m": False, "130m": False, "350m": True, "1b": True}
ONLY_LR_ACT_CHOICES = ("auto", "true", "false")  # how the command line and the app ask for it


@strict
class CoLAConfig(LlamaConfig):
    """A :class:`transformers.LlamaConfig` plus the rank r of CoLA's factors and how they are trained.

    σ is ``hidden_act`` (SiLU, the only non-linearity the paper trains). Checks at construction raise
    ``ValueError`` naming the bad value: r must be at least 1 and below the smaller side of every factorized linear
    (a factorization with r ≥ min(m, n) has at least as many parameters as W), and CoLA-M refuses attention dropout
    (its recomputation would draw other dropout masks than the forward pass did).
    """

    model_type = "cola"
    # The LLaMA tensor-parallel plan names nn.Linear weights that CoLA does not have.
    base_model_tp_plan = None

    rank: int | None = field(
        default=None,
        metadata={"help": "r: rank of every factor pair A (r×n), B (m×r); empty = a quarter of hidden_size."},
    )
    cola_m: bool = field(
        default=False,
        metadata={
            "help": "CoLA-M: keep only each decoder layer's input and its seven r-dimensional activations A·x for "
            "backward and recompute the rest (same outputs and gradients, less activation memory)."
        },
    )
    only_lr_act: bool = field(
        default=True,
        metadata={
            "help": "Drop SwiGLU's outer SiLU: MLP(x) = down(gate(x) ⊙ up(x)), the factors' own σ being the only "
            "non-linearity (the paper's choice at 350M and above); false keeps down(SiLU(gate(x)) ⊙ up(x))."
        },
    )

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.rank is None:
            self.rank = max(1, self.hidden_size // 4)
        self.check_cola()

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``{module name: (m, n)}``: output and input size of each factorized linear of a decoder layer."""
        d, f = self.hidden_size, self.intermediate_size
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads or self.num_attention_heads
        head_dim = self.head_dim or d // heads
        return {
            "q_proj": (heads * head_dim, d),
            "k_proj": (kv_heads * head_dim, d),
            "v_proj": (kv_heads * head_dim, d),
            "o_proj": (d, heads * head_dim),
            "gate_proj": (f, d),
            "up_proj": (f, d),
            "down_proj": (d, f),
        }

    def check_cola(self) -> None:
        """Refuse a rank or a CoLA-M setting that cannot work, with a message naming the value."""
        rank = self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise ValueError(f"CoLAConfig rank must be an integer >= 1 (or None for hidden_size // 4), got {rank!r}")
        name, (m, n) = min(self.linear_shapes().items(), key=lambda item: min(item[1]))
        if rank >= min(m, n):
            raise ValueError(
                f"CoLAConfig rank {rank} must be below the smaller side of every factorized linear: {name} is "
                f"{m}×{n}, so rank must be < {min(m, n)} (B·σ(A·x) at r ≥ min(m, n) is not low-rank); the paper "
                f"uses hidden_size // 4 = {max(1, self.hidden_size // 4)}"
            )
        if self.cola_m and self.attention_dropout:
            raise ValueError(
                f"CoLA-M recomputes attention in backward, so it needs attention_dropout = 0, got "
                f"{self.attention_dropout!r}; use cola_m=False for attention dropout"
            )


def resolve_only_lr_act(choice: str | bool | None, size: str | None) -> bool | None:
    """``True`` / ``False`` as asked; for ``auto`` (or None) the paper's choice for ``size``, None for a size the
    table does not know (the caller keeps its config's value)."""
    if isinstance(choice, bool):
        return choice
    if choice in (None, "auto"):
        return PAPER_ONLY_LR_ACT.get(str(size).lower()) if size is not None else None
    if choice not in ONLY_LR_ACT_CHOICES:
        raise ValueError(f"only_lr_act must be one of {list(ONLY_LR_ACT_CHOICES)}, got {choice!r}")
    return choice == "true"


__all__ = ["COLA_LINEAR_MODULES", "CoLAConfig", "ONLY_LR_ACT_CHOICES", "PAPER_ONLY_LR_ACT", "resolve_only_lr_act"]
