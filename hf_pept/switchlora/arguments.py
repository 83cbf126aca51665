"""SwitchLoRA's option group of ``hf-pept train`` (and the app's form), mirrored from :class:`SwitchLoRAConfig`.

Its own scaling and dropout (``--switchlora_alpha``, ``--switchlora_dropout``): the paper's α = 1 and no dropout
differ from the LoRA / ReLoRA defaults of the shared adapter group.
"""

from ..knobs import mirror_config
from .config import SwitchLoRAConfig

SwitchLoRAArguments = mirror_config(
    "SwitchLoRAArguments",
    "SwitchLoRA switching",
    "SwitchLoRA's knobs (Zhou et al. 2024), mirrored from SwitchLoRAConfig.",
    SwitchLoRAConfig,
    {
        "lora_alpha": "switchlora_alpha",
        "lora_dropout": "switchlora_dropout",
        "switch_interval": "switch_interval",
        "switch_descent_rate": "switch_descent_rate",
        "freeze_steps": "freeze_steps",
        "offload_candidates": "offload_candidates",
        "init_lora_weights": "switchlora_init",
    },
)

__all__ = ["SwitchLoRAArguments"]
