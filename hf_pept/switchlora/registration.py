"""Registering SwitchLoRA with peft (``PeftType.SWITCHLORA``) and hooking it into ``transformers.Trainer``.

The peft and Trainer plumbing is shared with ReLoRA (:mod:`hf_pept.tuners`).
"""

from __future__ import annotations

from ..tuners import register_peft_tuner
from .config import PEFT_TYPE_NAME, SwitchLoRAConfig
from .model import SwitchLoRAModel


def register() -> None:
    """Everything ``import hf_pept`` does for SwitchLoRA; idempotent."""
    from .callback import install_trainer_hook

    register_peft_tuner(PEFT_TYPE_NAME, SwitchLoRAConfig, SwitchLoRAModel)
    install_trainer_hook()
