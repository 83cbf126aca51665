"""GaLore (Zhao et al. 2024, arXiv 2403.03507): gradient low-rank projection optimizers.

Public classes usable in a plain PyTorch loop; ``import hf_pept`` also makes them the implementation behind
transformers' stock ``optim="galore_*"`` names (see :mod:`hf_pept.galore.integration`).
"""

from .adafactor import GaLoreAdafactor
from .adamw8bit import GaLoreAdamW8bit
from .config import GaLoreConfig
from .optimizer import GaLoreAdamW, GaLoreOptimizer
from .projector import compute_projectors, projection_side

__all__ = [
    "GaLoreAdafactor",
    "GaLoreAdamW",
    "GaLoreAdamW8bit",
    "GaLoreConfig",
    "GaLoreOptimizer",
    "compute_projectors",
    "projection_side",
]
