"""``ReLoRAConfig``: the peft config of ReLoRA (Lialin et al. 2023, "ReLoRA: High-Rank Training Through Low-Rank
Updates", arXiv 2307.05695).

The LoRA fields users know (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``bias``,
``modules_to_save``, ...) plus the restart knobs of the paper: every ``relora_steps`` optimizer steps the update
s·B·A (s = α/r) is merged into W, the factors are re-initialised, the factors' optimizer state is pruned and the
learning rate restarts from 0 over ``restart_warmup_steps`` (the paper's "jagged" schedule, §3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from ..tuners import (
    bias_field,
    check_bias,
    check_layer_filter,
    check_no_target_parameters,
    exclude_modules_field,
    finish_tuner_config,
    modules_to_save_field,
    target_parameters_field,
)

RESET_MODES = ("magnitude", "random", "zero", "none")
BIAS_MODES = ("none", "all", "relora_only")
# The paper's prune ratios (§3 and its code): magnitude pruning keeps the top 10 % of each moment, random pruning
# keeps a random 0.1 %. "zero" and "none" do not prune.
DEFAULT_PRUNE_RATIO = {"magnitude": 0.9, "random": 0.999}
PEFT_TYPE_NAME = "RELORA"


@dataclass
class ReLoRAConfig(PeftConfig):
    """Configuration of a :class:`~hf_pept.relora.ReLoRAModel`.

    Use it as any peft config: ``get_peft_model(model, ReLoRAConfig(r=128, relora_steps=1000))``. With the stock
    ``transformers.Trainer`` the merges, optimizer resets and jagged learning rate then happen by themselves.

    Defaults follow the paper's code: r = 128, α = 32, dropout 0.1, magnitude pruning of 90 % of the state.
    ``target_modules=None`` adapts every linear layer except the output head (attention and MLP in a decoder,
    as in the paper).
    """

    r: int = field(default=128, metadata={"help": "Rank r of the factors B (out×r) and A (r×in)."})
    lora_alpha: float = field(default=32, metadata={"help": "α in the scaling s = α / r of the update s·B·A."})
    lora_dropout: float = field(default=0.1, metadata={"help": "Dropout on the input of the low-rank path."})
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Module names (or suffixes) or one regex of the linear layers to adapt, e.g. ['q_proj', 'v_proj']; "
                "'all-linear' or None adapts every linear layer except the output head."
            )
        },
    )
    exclude_modules: list[str] | str | None = exclude_modules_field()
    layers_to_transform: list[int] | int | None = field(
        default=None,
        metadata={
            "help": (
                "Only adapt the layers with these indices, e.g. [0, 1]: the listed target_modules inside them, or "
                "every linear layer inside them with target_modules=None. Not with a regex or 'all-linear' "
                "target_modules (as in peft's LoraConfig)."
            )
        },
    )
    layers_pattern: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Name of the layer list holding the indexed layers, e.g. 'layers' or 'h' (default: the first "
                "numbered segment of a module's name); only with layers_to_transform."
            )
        },
    )
    target_parameters: list[str] | None = target_parameters_field("ReLoRA")
    bias: Literal["none", "all", "relora_only"] = bias_field("relora_only")
    modules_to_save: list[str] | None = modules_to_save_field()
    relora_steps: int = field(
        default=1000,
        metadata={"help": "Optimizer steps between two merges (the paper's restart interval T)."},
    )
    restart_warmup_steps: int = field(
        default=50,
        metadata={
            "help": (
                "Steps over which the learning-rate multiplier rises linearly from 0 back to 1 after each reset "
                "(the jagged schedule); must be smaller than relora_steps."
            )
        },
    )
    optimizer_reset: Literal["magnitude", "random", "zero", "none"] = field(
        default="magnitude",
        metadata={
            "help": (
                "What happens to the factors' optimizer state at each merge: 'magnitude' zeroes the prune_ratio "
                "smallest entries of each moment, 'random' zeroes each entry with probability prune_ratio, "
                "'zero' zeroes the moments, 'none' keeps them."
            )
        },
    )
    prune_ratio: float | None = field(
        default=None,
        metadata={
            "help": (
                "Fraction of optimizer-state entries zeroed at each reset, in [0, 1). None picks the paper's value "
                "for the mode: 0.9 for 'magnitude', 0.999 for 'random'; must stay None for 'zero' and 'none'."
            )
        },
    )
    warm_start_steps: int = field(
        default=0,
        metadata={
            "help": (
                "Full-rank steps before the first low-rank cycle (0 = off): the adapted layers' weights train "
                "with the factors, then are merged and frozen, and the factors start with fresh optimizer state."
            )
        },
    )
    reinit_seed: int = field(
        default=0,
        metadata={
            "help": (
                "Seed of the factor re-initialisation and random pruning; combined with the step so that every "
                "data-parallel rank, and a resumed run, draws the same values."
            )
        },
    )
    save_base_weights: bool = field(
        default=True,
        metadata={
            "help": (
                "Save the adapted layers' base weights with the adapter. Merges change them, so only a checkpoint "
                "with them restores a run; False saves a LoRA-sized file valid before the first merge only."
            )
        },
    )

    def __post_init__(self):
        super().__post_init__()
        finish_tuner_config(self, PEFT_TYPE_NAME)
        self._validate()

    def _validate(self) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r <= 0:
            raise ValueError(f"r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        check_bias(self, BIAS_MODES)
        check_no_target_parameters(self, "ReLoRA adapts")
        check_layer_filter(self)
        for name in ("relora_steps", "restart_warmup_steps", "warm_start_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.relora_steps <= self.restart_warmup_steps:
            raise ValueError(
                f"relora_steps ({self.relora_steps}) must be larger than restart_warmup_steps "
                f"({self.restart_warmup_steps}): the learning rate must finish its re-warm-up before the next merge"
            )
        if self.optimizer_reset not in RESET_MODES:
            raise ValueError(f"optimizer_reset must be one of {RESET_MODES}, got {self.optimizer_reset!r}")
        if self.optimizer_reset in DEFAULT_PRUNE_RATIO:
            if self.prune_ratio is None:
                self.prune_ratio = DEFAULT_PRUNE_RATIO[self.optimizer_reset]
            if not isinstance(self.prune_ratio, (int, float)) or not 0.0 <= self.prune_ratio < 1.0:
                raise ValueError(
                    f"prune_ratio must be in [0, 1) (the fraction of optimizer-state entries zeroed; use "
                    f"optimizer_reset='zero' to zero all), got {self.prune_ratio!r}"
                )
            self.prune_ratio = float(self.prune_ratio)
        elif self.prune_ratio is not None:
            raise ValueError(
                f"prune_ratio={self.prune_ratio!r} has no effect with optimizer_reset={self.optimizer_reset!r}; "
                f"leave it None or use optimizer_reset='magnitude' or 'random'"
            )

    @property
    def scaling(self) -> float:
        """s = α / r (LoRA, Hu et al. 2021, §4.1)."""
        return self.lora_alpha / self.r
