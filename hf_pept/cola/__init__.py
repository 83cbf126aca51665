"""CoLA and CoLA-M (Liu et al. 2025, arXiv 2502.10940): LLaMA with low-rank activations, in the Auto classes.

Importing this package registers ``model_type="cola"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM`` (idempotent), so ``AutoModelForCausalLM.from_config(CoLAConfig(...))``,
``save_pretrained`` / ``from_pretrained`` and ``generate`` work as for LLaMA.
"""

from .config import COLA_LINEAR_MODULES, PAPER_ONLY_LR_ACT, CoLAConfig
from .modeling import CoLAForCausalLM, CoLALinear, CoLAModel, CoLAPreTrainedModel


def register() -> None:
    """Register CoLA with the transformers Auto classes (safe to call again)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(CoLAConfig.model_type, CoLAConfig, exist_ok=True)
    AutoModel.register(CoLAConfig, CoLAModel, exist_ok=True)
    AutoModelForCausalLM.register(CoLAConfig, CoLAForCausalLM, exist_ok=True)


register()

__all__ = [
    "COLA_LINEAR_MODULES",
    "PAPER_ONLY_LR_ACT",
    "CoLAConfig",
    "CoLAForCausalLM",
    "CoLALinear",
    "CoLAModel",
    "CoLAPreTrainedModel",
    "register",
]
