"""CR-Net (Kong et al. 2026, arXiv 2509.18993): a cross-layer low-rank residual LLaMA, in the Auto classes.

Importing this package registers ``model_type="crnet"`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM`` (idempotent), so ``AutoModelForCausalLM.from_config(CRNetConfig(...))``,
``save_pretrained`` / ``from_pretrained`` and ``generate`` work as for LLaMA.
"""

from .config import CRNET_PROJECTIONS, PAPER_CHECKPOINT_EVERY, CRNetConfig
from .modeling import CRNetDecoderLayer, CRNetForCausalLM, CRNetModel, CRNetPreTrainedModel, CRNetProjection


def register() -> None:
    """Register CR-Net with the transformers Auto classes (safe to call again)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    AutoConfig.register(CRNetConfig.model_type, CRNetConfig, exist_ok=True)
    AutoModel.register(CRNetConfig, CRNetModel, exist_ok=True)
    AutoModelForCausalLM.register(CRNetConfig, CRNetForCausalLM, exist_ok=True)


register()

__all__ = [
    "CRNET_PROJECTIONS",
    "PAPER_CHECKPOINT_EVERY",
    "CRNetConfig",
    "CRNetDecoderLayer",
    "CRNetForCausalLM",
    "CRNetModel",
    "CRNetPreTrainedModel",
    "CRNetProjection",
    "register",
]
