"""A tiny CoLA config shared by the CoLA tests."""

from hf_pept.cola import CoLAConfig

VOCAB = 300


def tiny_config(**overrides) -> CoLAConfig:
    """The tiny LLaMA's shape (d = 64, f = 176, 4 heads, 2 layers) as a CoLA config (rank 16 = d/4)."""
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=64,
        use_cache=False,
    )
    return CoLAConfig(**{**settings, **overrides})
