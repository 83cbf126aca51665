"""CoLA's option group of ``hf-pept train`` (and the app's form).

The rank is the shared ``--rank`` (:class:`hf_pept.knobs.LowRankArguments`); CoLA-M is its own method
(``--method cola-m``). ``only_lr_act`` is not mirrored one-to-one from :class:`CoLAConfig`: its default on the
command line is the paper's choice for the model size (:data:`PAPER_ONLY_LR_ACT`), which a single boolean
default cannot say, so it is a three-way choice resolved by :func:`hf_pept.cola.config.resolve_only_lr_act`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from .config import ONLY_LR_ACT_CHOICES, PAPER_ONLY_LR_ACT, CoLAConfig


def _only_lr_act_help() -> str:
    config_help = next(f for f in dataclasses.fields(CoLAConfig) if f.name == "only_lr_act").metadata["help"]
    on = [size for size, value in PAPER_ONLY_LR_ACT.items() if value]
    off = [size for size, value in PAPER_ONLY_LR_ACT.items() if not value]
    return f"{config_help} auto = the paper's choice for the size: false at {', '.join(off)}, true at {', '.join(on)}."


@dataclass
class CoLAArguments:
    """CoLA's architecture knob besides the rank (Liu et al. 2025, §3.2)."""

    section_title = "CoLA architecture"
    config_fields = {"only_lr_act": "only_lr_act"}

    only_lr_act: Literal["auto", "true", "false"] = field(default="auto", metadata={"help": _only_lr_act_help()})

    def __post_init__(self):
        if isinstance(self.only_lr_act, bool):
            self.only_lr_act = str(self.only_lr_act).lower()
        if self.only_lr_act not in ONLY_LR_ACT_CHOICES:
            raise ValueError(f"only_lr_act must be one of {list(ONLY_LR_ACT_CHOICES)}, got {self.only_lr_act!r}")


__all__ = ["CoLAArguments"]
