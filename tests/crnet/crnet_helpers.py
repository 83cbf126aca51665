"""A tiny CR-Net config shared by the CR-Net tests."""

from hf_pept.crnet import CRNetConfig

VOCAB = 300


def tiny_config(**overrides) -> CRNetConfig:
    """The tiny LLaMA's shape (d = 64, f = 176, 4 heads) with 3 layers as a CR-Net config (rank 16 = d/4)."""
    settings = dict(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=176,
        num_attention_heads=4,
        num_hidden_layers=3,
        max_position_embeddings=64,
        use_cache=False,
    )
    return CRNetConfig(**{**settings, **overrides})
