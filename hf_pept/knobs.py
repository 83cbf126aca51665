"""Option groups of ``hf-pept train`` shared by several methods, and the helper that mirrors a method config's fields.

Each group is a dataclass ``HfArgumentParser`` turns into command-line options (``--field_name``, help from
``metadata["help"]``) and the app turns into a form section. A method's own knobs are mirrored from its config
dataclass (:func:`mirror_config`) so their defaults and help texts live in that config once; the method table
(:mod:`hf_pept.methods`) says which groups each method reads. Two class attributes tie a group to the rest:

* ``section_title`` — the heading of the group in ``hf-pept train --help``, the app's form and ``hf-pept methods``;
* ``config_fields`` — for a mirrored group, ``{our field name: the config's field name}``.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from .relora.config import ReLoRAConfig

LLAMA_LINEAR_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def check_positive_int(owner: str, name: str, value: Any, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner} `{name}` must be an integer >= {low}, got {value!r}")


def mirror_config(name: str, title: str, doc: str, config_class: type, names: dict[str, str]) -> type:
    """A dataclass named ``name`` whose fields copy type, default and help of ``config_class``'s fields, renamed by
    ``names`` (the config's field name -> ours)."""
    hints = typing.get_type_hints(config_class)
    source = {f.name: f for f in dataclasses.fields(config_class)}
    fields = []
    for config_name, our_name in names.items():
        original = source[config_name]
        if original.default is dataclasses.MISSING:
            raise TypeError(f"{config_class.__name__}.{config_name} has no default to mirror")
        fields.append(
            (our_name, hints[config_name], field(default=original.default, metadata=dict(original.metadata)))
        )
    cls = dataclasses.make_dataclass(name, fields, namespace={"__doc__": doc, "section_title": title})
    cls.__module__ = config_class.__module__.rsplit(".", 1)[0] + ".arguments"
    cls.config_fields = {ours: theirs for theirs, ours in names.items()}
    return cls


@dataclass
class LowRankArguments:
    """The rank and the layers every low-rank method shares, so "the same rank" means the same number."""

    section_title = "Low rank"

    rank: int | None = field(
        default=None,
        metadata={
            "help": "r: rank of every low-rank method (LoRA / ReLoRA / SwitchLoRA factors B·A, GaLore's projected "
            "gradient PᵀG, SST's active singular vectors, CoLA's factors B·σ(A·x)); empty = the papers' ratio, a "
            "quarter of the model's hidden size (16 at tiny, 128 at 60m, 512 at 1b)."
        },
    )
    target_modules: list[str] = field(
        default_factory=lambda: list(LLAMA_LINEAR_MODULES),
        metadata={
            "help": "Linear layers made low-rank (module-name suffixes or regexes); embeddings, norms and the output "
            "head always train full-rank."
        },
    )

    def __post_init__(self):
        if self.rank is not None:
            check_positive_int("LowRankArguments", "rank", self.rank)
        if isinstance(self.target_modules, str):
            self.target_modules = [self.target_modules]
        if not self.target_modules:
            raise ValueError("target_modules must name at least one linear layer, e.g. ['q_proj', 'v_proj']")


AdapterArguments = mirror_config(
    "AdapterArguments",
    "Adapters (LoRA, ReLoRA)",
    "LoRA-style adapter knobs (LoRA and ReLoRA), mirrored from ReLoRAConfig.",
    ReLoRAConfig,
    {"lora_alpha": "lora_alpha", "lora_dropout": "lora_dropout"},
)
AdapterArguments.__module__ = __name__
