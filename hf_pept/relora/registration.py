"""Registering ReLoRA with peft (``PeftType.RELORA``) and hooking it into ``transformers.Trainer``.

peft's public ``register_peft_method`` fills its mappings (config class, tuner class, prefix) but requires the
name to be a member of the ``PeftType`` enum, which third-party methods cannot add through any API. We add the one
member the way ``enum`` itself stores members (``_member_map_``, ``_value2member_map_``, ``_member_names_``) and
verify the result through the enum's public behaviour; anything unexpected raises with the supported range.
"""

from __future__ import annotations

import enum

import peft
from peft.utils import PeftType

from .config import PEFT_TYPE_NAME, ReLoRAConfig
from .model import ReLoRAModel

SUPPORTED_PEFT = "peft>=0.21 (tested with 0.21.0 and 0.21.2)"


def _unsupported(reason: str) -> RuntimeError:
    return RuntimeError(
        f"hf_pept cannot register ReLoRA with peft {peft.__version__}: {reason}. Supported: {SUPPORTED_PEFT}."
    )


def add_peft_type(name: str) -> PeftType:
    """Add ``name`` as a member of peft's ``PeftType`` (a ``str`` enum) and return it; idempotent."""
    if name in PeftType.__members__:
        return PeftType[name]
    if not (issubclass(PeftType, str) and issubclass(PeftType, enum.Enum)):
        raise _unsupported("PeftType is no longer a str Enum")
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member._sort_order_ = len(PeftType._member_names_)
    # Class attribute first (EnumType.__setattr__ refuses names already in the member map), then the maps.
    type.__setattr__(PeftType, name, member)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    if PeftType(name) is not member or PeftType[name] is not member or member not in list(PeftType):
        raise _unsupported("adding a PeftType member did not take")
    return member


def register_with_peft() -> None:
    """``get_peft_model``, ``PeftModel.from_pretrained`` and ``save_pretrained`` accept ``ReLoRAConfig``; idempotent."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    try:
        from peft.utils import register_peft_method
    except ImportError as error:
        raise _unsupported("peft.utils.register_peft_method is missing") from error
    peft_type = add_peft_type(PEFT_TYPE_NAME)
    if PEFT_TYPE_TO_TUNER_MAPPING.get(peft_type) is ReLoRAModel:
        return
    register_peft_method(
        name=PEFT_TYPE_NAME.lower(), config_cls=ReLoRAConfig, model_cls=ReLoRAModel, prefix=ReLoRAModel.prefix
    )
    if PEFT_TYPE_TO_CONFIG_MAPPING.get(PEFT_TYPE_NAME) is not ReLoRAConfig:
        raise _unsupported("the config mapping does not resolve 'RELORA' after registration")


def register() -> None:
    """Everything ``import hf_pept`` does for ReLoRA."""
    from .callback import install_trainer_hook

    register_with_peft()
    install_trainer_hook()
