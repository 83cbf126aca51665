"""Registering ReLoRA with peft (``PeftType.RELORA``) and hooking it into ``transformers.Trainer``.

The peft and Trainer plumbing is shared with the other tuners (:mod:`hf_pept.tuners`).
"""

from __future__ import annotations

from ..tuners import SUPPORTED_PEFT, add_peft_type, register_peft_tuner
from .config import PEFT_TYPE_NAME, ReLoRAConfig
from .model import ReLoRAModel

__all__ = ["SUPPORTED_PEFT", "add_peft_type", "register", "register_with_peft"]


def register_with_peft() -> None:
    """``get_peft_model``, ``PeftModel.from_pretrained`` and ``save_pretrained`` accept ``ReLoRAConfig``; idempotent."""
    register_peft_tuner(PEFT_TYPE_NAME, ReLoRAConfig, ReLoRAModel)


def register() -> None:
    """Everything ``import hf_pept`` does for ReLoRA."""
    from .callback import install_trainer_hook

    register_with_peft()
    install_trainer_hook()
