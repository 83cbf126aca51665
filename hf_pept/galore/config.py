"""The GaLore knobs: one dataclass, validated once, shared by the optimizers, ``optim_args`` and the docs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

PROJ_TYPES = ("std", "reverse_std", "left", "right", "full")
PROJ_METHODS = ("svd", "randomized")


@dataclass
class GaLoreConfig:
    """Hyperparameters of the gradient projection (GaLore, Zhao et al. 2024, Algorithm 1)."""

    rank: int = field(default=128, metadata={"help": "r: rank of the projected gradient R = PᵀG (or GQ)."})
    update_proj_gap: int = field(
        default=200, metadata={"help": "T: steps between projector refreshes (a new SVD of the current gradient)."}
    )
    scale: float = field(default=0.25, metadata={"help": "α: scale of the back-projected update α·P·N."})
    proj_type: str = field(
        default="std",
        metadata={
            "help": "Which side is projected: 'std' the smaller side, 'reverse_std' the larger side, 'left' "
            "(R = PᵀG), 'right' (R = GQ), 'full' (both: R = PᵀGQ)."
        },
    )
    proj_method: str = field(
        default="svd",
        metadata={
            "help": "How P is computed: 'svd' (exact truncated SVD) or 'randomized' (Halko et al. 2011 range "
            "finder with oversampling and power iterations)."
        },
    )
    oversampling: int = field(
        default=8,
        metadata={"help": "Extra random directions of the randomized range finder (proj_method='randomized')."},
    )
    power_iters: int = field(
        default=2, metadata={"help": "Power iterations of the randomized range finder (proj_method='randomized')."}
    )
    fira: bool = field(
        default=False,
        metadata={
            "help": "Fira (Chen et al. 2024): also apply the gradient outside the subspace, G − P R, scaled per column "
            "by φ = ‖N‖/‖R‖ and capped by the norm-growth limiter; Adam-based GaLore only, one-sided projections."
        },
    )
    fira_limiter: float = field(
        default=1.01,
        metadata={"help": "γ of Fira's norm-growth limiter: the residual's norm may grow at most γ× per step."},
    )
    seed: int = field(
        default=0,
        metadata={
            "help": "Base seed of the randomized range finder; the sketch of a parameter at a step is seeded from "
            "(seed, parameter index, step), so resumed and distributed runs draw the same sketch."
        },
    )

    def __post_init__(self):
        for name in ("rank", "update_proj_gap", "oversampling", "power_iters", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"GaLore `{name}` must be an integer, got {value!r}")
        if self.rank < 1:
            raise ValueError(f"GaLore `rank` must be >= 1, got {self.rank}")
        if self.update_proj_gap < 1:
            raise ValueError(f"GaLore `update_proj_gap` must be >= 1, got {self.update_proj_gap}")
        if self.oversampling < 0 or self.power_iters < 0:
            raise ValueError(
                f"GaLore `oversampling` and `power_iters` must be >= 0, got {self.oversampling}, {self.power_iters}"
            )
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not self.scale > 0:
            raise ValueError(f"GaLore `scale` must be a positive number, got {self.scale!r}")
        self.scale = float(self.scale)
        if not isinstance(self.fira, bool):
            raise ValueError(f"GaLore `fira` must be True or False, got {self.fira!r}")
        if isinstance(self.fira_limiter, bool) or not isinstance(self.fira_limiter, (int, float)):
            raise ValueError(f"GaLore `fira_limiter` must be a number >= 1, got {self.fira_limiter!r}")
        if not self.fira_limiter >= 1:
            raise ValueError(f"GaLore `fira_limiter` (γ) must be >= 1, got {self.fira_limiter!r}")
        self.fira_limiter = float(self.fira_limiter)
        if self.fira and self.proj_type == "full":
            raise ValueError(
                "GaLore `fira=True` needs a one-sided projection (its residual is scaled per row or column of G); "
                f"proj_type={self.proj_type!r} projects both sides: use 'std', 'reverse_std', 'left' or 'right'"
            )
        if self.proj_type not in PROJ_TYPES:
            raise ValueError(f"GaLore `proj_type` must be one of {PROJ_TYPES}, got {self.proj_type!r}")
        if self.proj_method not in PROJ_METHODS:
            raise ValueError(f"GaLore `proj_method` must be one of {PROJ_METHODS}, got {self.proj_method!r}")

    @classmethod
    def knob_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_strings(cls, values: dict[str, str]) -> GaLoreConfig:
        """Build from ``optim_args`` strings ("rank=128,scale=0.25" parsed to a dict), naming any bad key or value."""
        valid = cls.knob_names()
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"Unknown GaLore optim_args key(s) {unknown}; valid keys are {list(valid)}")
        parsed: dict[str, Any] = {}
        types = {f.name: type(f.default) for f in fields(cls)}
        for key, text in values.items():
            if types[key] is bool:
                parsed[key] = _parse_bool(key, text)
                continue
            try:
                parsed[key] = types[key](text)
            except ValueError:
                raise ValueError(f"GaLore optim_args `{key}={text}` is not a valid {types[key].__name__}") from None
        return cls(**parsed)

    def to_group(self) -> dict[str, Any]:
        """The knobs as param-group entries of the GaLore optimizers."""
        return asdict(self)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _parse_bool(key: str, text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"GaLore optim_args `{key}={text}` is not a boolean; use one of {_TRUE + _FALSE}")
