"""ReLoRA (Lialin et al. 2023, arXiv 2307.05695) as a peft tuner that runs itself inside ``transformers.Trainer``.

Importing this package registers ``PeftType.RELORA`` with peft and the automatic Trainer callback.
"""

from ..optim_state import reset_optimizer_state
from .callback import ReLoRACallback, attach_relora_callback
from .config import ReLoRAConfig
from .layer import Linear, ReLoRALayer
from .model import ReLoRAModel
from .registration import register
from .schedule import JaggedSchedule, apply_jagged_schedule
from .stepper import ReLoRAStepper, find_relora_model

register()

__all__ = [
    "JaggedSchedule",
    "Linear",
    "ReLoRACallback",
    "ReLoRAConfig",
    "ReLoRALayer",
    "ReLoRAModel",
    "ReLoRAStepper",
    "apply_jagged_schedule",
    "attach_relora_callback",
    "find_relora_model",
    "reset_optimizer_state",
]
