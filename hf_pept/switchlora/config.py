"""``SwitchLoRAConfig``: the peft config of SwitchLoRA (Zhou, Wang & Xu 2024, "SwitchLoRA: Switched Low-Rank
Adaptation Can Learn Full-Rank Information", arXiv 2406.06564; v1 title "Revolutionizing Large Language Model
Training through Dynamic Parameter Adjustment").

The LoRA fields users know (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ``bias``,
``modules_to_save``, ...) plus the switching knobs of the paper: each optimizer step, k(t) rows of A and k(t)
columns of B per adapted layer are swapped with vectors of a candidate pool, k(t) = r / interval(t) with

    interval(t) = switch_interval / 0.3^((t+1) / (switch_descent_rate · T))          (T = total optimizer steps)

so switching is frequent early and fades (to 30 % of its initial rate at t = switch_descent_rate · T). The
counterpart of each switched vector is frozen for ``freeze_steps`` steps and its optimizer state restarts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from ..tuners import (
    bias_field,
    check_bias,
    check_int,
    check_layer_filter,
    check_no_target_parameters,
    exclude_modules_field,
    finish_tuner_config,
    modules_to_save_field,
    target_parameters_field,
)

BIAS_MODES = ("none", "all", "switchlora_only")
INIT_MODES = ("switchlora", "lora")
PEFT_TYPE_NAME = "SWITCHLORA"


@dataclass
class SwitchLoRAConfig(PeftConfig):
    """Configuration of a :class:`~hf_pept.switchlora.SwitchLoRAModel`.

    Use it as any peft config: ``get_peft_model(model, SwitchLoRAConfig(r=128))``. With the stock
    ``transformers.Trainer`` the switches, freezes and optimizer-state resets then happen by themselves.

    Defaults follow the authors' code: α = 1 (scale s = 1/r), no dropout, interval₀ = 40, descent rate 0.1,
    N = 5 frozen steps, candidate pools in host memory, and the init that gives B·ΔA and ΔB·A equal magnitude.
    ``target_modules=None`` adapts every linear layer inside an attention or MLP block (q, k, v, o, gate, up, down
    in a LLaMA), as the paper does; embeddings, norms and the output head stay full-rank.
    """

    r: int = field(default=128, metadata={"help": "Rank r of the factors B (out×r) and A (r×in)."})
    lora_alpha: float = field(
        default=1.0, metadata={"help": "α in the scaling s = α / r of the update s·B·A; the paper's 1 gives s = 1/r."}
    )
    lora_dropout: float = field(
        default=0.0, metadata={"help": "Dropout on the input of the low-rank path (0 in the paper's pre-training)."}
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Module names (or suffixes) or one regex of the linear layers to adapt; None adapts every linear "
                "layer inside an attention or MLP block (a module path containing 'attn', 'attention' or 'mlp')."
            )
        },
    )
    exclude_modules: list[str] | str | None = exclude_modules_field()
    layers_to_transform: list[int] | int | None = field(
        default=None, metadata={"help": "Only adapt the layers with these indices (needs layers_pattern to be found)."}
    )
    layers_pattern: list[str] | str | None = field(
        default=None, metadata={"help": "Name of the layer list holding the indexed layers, e.g. 'layers' or 'h'."}
    )
    target_parameters: list[str] | None = target_parameters_field("SwitchLoRA")
    bias: Literal["none", "all", "switchlora_only"] = bias_field("switchlora_only")
    modules_to_save: list[str] | None = modules_to_save_field()
    switch_interval: int = field(
        default=40,
        metadata={
            "help": (
                "interval₀: at the start each vector of A and B is switched once every switch_interval steps on "
                "average (k = r / interval vectors per step, per layer and side); must exceed 2·freeze_steps."
            )
        },
    )
    switch_descent_rate: float = field(
        default=0.1,
        metadata={
            "help": (
                "Fraction of the training steps after which the switching frequency has fallen to 30 % of its "
                "initial value (interval(t) = interval₀ / 0.3^((t+1)/(rate·T))); it keeps falling exponentially."
            )
        },
    )
    freeze_steps: int = field(
        default=5,
        metadata={
            "help": (
                "N: optimizer steps the counterpart of a switched vector stays frozen (gradient zeroed) while its "
                "restarted Adam moments warm up; 0 restarts the moments without freezing."
            )
        },
    )
    offload_candidates: bool = field(
        default=True,
        metadata={
            "help": (
                "Keep the candidate pools (min(in, out) vectors per side and layer) in host memory and copy only "
                "the switched vectors to the device; False keeps them beside the factors."
            )
        },
    )
    init_lora_weights: Literal["switchlora", "lora"] = field(
        default="switchlora",
        metadata={
            "help": (
                "'switchlora': A, B and their candidates uniform with std_A = (√m·r/n^1.5)^¼·√g, "
                "std_B = (r/√(mn))^¼·√g (g = 1/√3), so that B·ΔA and ΔB·A have equal magnitude; 'lora': "
                "Kaiming-uniform A, zero B (B's candidates zero too)."
            )
        },
    )
    switch_seed: int = field(
        default=0,
        metadata={
            "help": (
                "Seed of the candidate pools and factors and of the per-step draws of k(t); every data-parallel "
                "rank, and a resumed run, draws the same values."
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
        if not isinstance(self.lora_alpha, (int, float)) or not self.lora_alpha > 0:
            raise ValueError(f"lora_alpha must be > 0 (the scaling is s = lora_alpha / r), got {self.lora_alpha!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        check_bias(self, BIAS_MODES)
        if self.init_lora_weights not in INIT_MODES:
            raise ValueError(f"init_lora_weights must be one of {INIT_MODES}, got {self.init_lora_weights!r}")
        check_no_target_parameters(self, "SwitchLoRA adapts")
        check_layer_filter(self, refuse_str_targets=False)
        check_int("switch_interval", self.switch_interval, 1)
        check_int("freeze_steps", self.freeze_steps, 0)
        check_int("switch_seed", self.switch_seed, 0)
        if 2 * self.freeze_steps >= self.switch_interval:
            raise ValueError(
                f"freeze_steps ({self.freeze_steps}) must be below switch_interval / 2 ({self.switch_interval} / 2): "
                "each switch freezes the counterpart vector, and with switches every interval / 2 steps or more "
                "often the pointers of A and B would reach vectors that are still frozen; raise switch_interval or "
                "lower freeze_steps"
            )
        if not isinstance(self.switch_descent_rate, (int, float)) or not self.switch_descent_rate > 0:
            raise ValueError(f"switch_descent_rate must be > 0, got {self.switch_descent_rate!r}")
        self.switch_descent_rate = float(self.switch_descent_rate)
        self.lora_alpha = float(self.lora_alpha)

    @property
    def scaling(self) -> float:
        """s = α / r (LoRA, Hu et al. 2021, §4.1; SwitchLoRA uses α = 1)."""
        return self.lora_alpha / self.r
