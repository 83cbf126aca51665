"""CR-Net's option group of ``hf-pept train`` (and the app's form).

The rank is the shared ``--rank`` (:class:`hf_pept.knobs.LowRankArguments`). ``recompute`` and
``checkpoint_every`` take their defaults and help texts from :class:`CRNetConfig` (written out here rather than
through :func:`hf_pept.knobs.mirror_config`, which cannot read a transformers config's type hints).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..knobs import check_positive_int
from .config import CRNetConfig

_CONFIG_FIELDS = {f.name: f for f in dataclasses.fields(CRNetConfig)}


def _from_config(name: str):
    source = _CONFIG_FIELDS[name]
    return field(default=source.default, metadata={"help": source.metadata["help"]})


@dataclass
class CRNetArguments:
    """CR-Net's recomputation knobs besides the rank (Kong et al. 2026, arXiv 2509.18993)."""

    section_title = "CR-Net architecture"
    config_fields = {"recompute": "recompute", "checkpoint_every": "checkpoint_every"}

    recompute: bool = _from_config("recompute")
    checkpoint_every: int = _from_config("checkpoint_every")

    def __post_init__(self):
        check_positive_int("CRNetArguments", "checkpoint_every", self.checkpoint_every)


__all__ = ["CRNetArguments"]
