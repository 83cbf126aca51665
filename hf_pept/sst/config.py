"""``SSTConfig``: the peft config of Sparse Spectral Training (Zhao, Zhang, Li, Liu, Cannistraci, "Sparse Spectral
Training and Inference on Euclidean and Hyperbolic Neural Networks", ICML 2025, arXiv 2405.15481).

Each targeted ``nn.Linear`` with weight W (m×n) is replaced by its singular value decomposition W = U·diag(Σ)·Vᵀ
(§4.1), k = min(m, n) triplets. Σ trains at every step; of the singular vectors only r sampled columns of U and V
train at a time (§4.2, §4.4). The schedule has three nested loops (Appendix A): a *step* is one optimizer step; an
*iteration* is ``iteration_steps`` steps (T3) with one sampled set of r vectors; a *round* is ``round_iterations``
iterations (T2), after which U·diag(Σ)·Vᵀ is decomposed again (re-SVD).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from peft.config import PeftConfig

from ..tuners import (
    bias_field,
    check_bias,
    check_int,
    check_no_target_parameters,
    exclude_modules_field,
    finish_tuner_config,
    modules_to_save_field,
    target_parameters_field,
)

SAMPLING_MODES = ("mixed", "uniform")
BIAS_MODES = ("none", "all", "sst_only")
PEFT_TYPE_NAME = "SST"


@dataclass
class SSTConfig(PeftConfig):
    """Configuration of an :class:`~hf_pept.sst.SSTModel`.

    Use it as any peft config: ``get_peft_model(model, SSTConfig(r=64, iteration_steps=200))``. With the stock
    ``transformers.Trainer`` the resampling, re-SVD, renormalisation and the per-iteration learning-rate warm-up then
    happen by themselves (:class:`~hf_pept.sst.SSTCallback`, attached automatically).

    Defaults follow the paper: T3 = 200 steps per iteration with a 20-step warm-up (the paper's IWSLT'14 setting;
    the paper's per-LLM T3 was not retrieved, so 200 is a starting point), T2 = d/r iterations per round, the
    enhanced gradient and the mixed sampling distribution. ``target_modules=None`` replaces every linear layer
    except the output head ("all linear layers", as the paper's LLM runs).
    """

    r: int = field(
        default=64,
        metadata={
            "help": "Active singular vectors per layer: r columns of U and of V train at a time (Σ always trains "
            "in full); 0 < r < min(out, in) of every targeted layer."
        },
    )
    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": (
                "Module names (or suffixes) or one regex of the linear layers to decompose, e.g. "
                "['q_proj', 'v_proj']; 'all-linear' or None decomposes every linear layer except the output head."
            )
        },
    )
    exclude_modules: list[str] | str | None = exclude_modules_field("decompose")
    target_parameters: list[str] | None = target_parameters_field("SST")
    bias: Literal["none", "all", "sst_only"] = bias_field("sst_only", "decomposed")
    modules_to_save: list[str] | None = modules_to_save_field()
    iteration_steps: int = field(
        default=200,
        metadata={
            "help": "T3: optimizer steps per iteration; the r active singular vectors are resampled after each "
            "(the paper: 200)."
        },
    )
    round_iterations: int | None = field(
        default=None,
        metadata={
            "help": "T2: iterations per round; after each round U·diag(Σ)·Vᵀ is decomposed again (re-SVD). Empty "
            "= the paper's d/r, rounded up, with d the largest min(out, in) of the decomposed layers."
        },
    )
    iteration_warmup_steps: int = field(
        default=20,
        metadata={
            "help": "Steps over which the learning-rate multiplier rises linearly back to 1 after each resample, on "
            "top of the lr_scheduler_type (the paper: 20); 0 = none; smaller than iteration_steps."
        },
    )
    sampling: Literal["mixed", "uniform"] = field(
        default="mixed",
        metadata={
            "help": "How the r vectors are drawn, without replacement: 'mixed' (the paper) with probability "
            "½·(1/k + Σᵢ/ΣΣ), 'uniform' with probability 1/k."
        },
    )
    enhanced_gradient: bool = field(
        default=True,
        metadata={
            "help": "Update U and V with the paper's enhanced gradient (∂L/∂W)·Vᵢ and (∂L/∂W)ᵀ·Uᵢ, without the "
            "factor Σᵢ of the true gradient, so that directions with small Σᵢ still move."
        },
    )
    sample_seed: int = field(
        default=0,
        metadata={
            "help": "Seed of the sampling, combined with the step so that every data-parallel rank, and a resumed "
            "run, draws the same vectors."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        finish_tuner_config(self, PEFT_TYPE_NAME)
        self._validate()

    def _validate(self) -> None:
        check_int("r", self.r, 1)
        check_int("iteration_steps", self.iteration_steps, 1)
        check_int("iteration_warmup_steps", self.iteration_warmup_steps, 0)
        check_int("sample_seed", self.sample_seed, 0)
        if self.round_iterations is not None:
            check_int("round_iterations", self.round_iterations, 1)
        if self.iteration_warmup_steps >= self.iteration_steps:
            raise ValueError(
                f"iteration_warmup_steps ({self.iteration_warmup_steps}) must be smaller than iteration_steps "
                f"({self.iteration_steps}): the learning rate must finish its warm-up before the next resample"
            )
        if self.sampling not in SAMPLING_MODES:
            raise ValueError(f"sampling must be one of {SAMPLING_MODES}, got {self.sampling!r}")
        if not isinstance(self.enhanced_gradient, bool):
            raise ValueError(f"enhanced_gradient must be True or False, got {self.enhanced_gradient!r}")
        check_no_target_parameters(self, "SST decomposes")
        check_bias(self, BIAS_MODES)
