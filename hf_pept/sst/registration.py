"""Registering SST with peft (``PeftType.SST``) and hooking it into ``transformers.Trainer``.

The peft and Trainer plumbing is shared with the other tuners (:mod:`hf_pept.tuners`).
"""

from __future__ import annotations

from ..tuners import register_peft_tuner
from .config import PEFT_TYPE_NAME, SSTConfig
from .model import SSTModel

__all__ = ["register", "register_with_peft"]


def register_with_peft() -> None:
    """``get_peft_model``, ``PeftModel.from_pretrained`` and ``save_pretrained`` accept ``SSTConfig``; idempotent."""
    register_peft_tuner(PEFT_TYPE_NAME, SSTConfig, SSTModel)


def register() -> None:
    """Everything ``import hf_pept`` does for SST."""
    from .callback import install_trainer_hook

    register_with_peft()
    install_trainer_hook()
