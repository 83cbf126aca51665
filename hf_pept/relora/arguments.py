"""ReLoRA's option group of ``hf-pept train`` (and the app's form), mirrored from :class:`ReLoRAConfig`."""

from ..knobs import mirror_config
from .config import ReLoRAConfig

ReLoRAArguments = mirror_config(
    "ReLoRAArguments",
    "ReLoRA restarts",
    "ReLoRA's restart knobs (Lialin et al. 2023, §3), mirrored from ReLoRAConfig.",
    ReLoRAConfig,
    {
        "relora_steps": "relora_steps",
        "restart_warmup_steps": "restart_warmup_steps",
        "optimizer_reset": "optimizer_reset",
        "prune_ratio": "prune_ratio",
        "warm_start_steps": "warm_start_steps",
    },
)

__all__ = ["ReLoRAArguments"]
