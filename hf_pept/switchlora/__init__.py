"""SwitchLoRA (Zhou et al. 2024, arXiv 2406.06564) as a peft tuner that runs itself inside ``transformers.Trainer``.

Importing this package registers ``PeftType.SWITCHLORA`` with peft and the automatic Trainer callback.
"""

from .callback import SwitchLoRACallback, attach_switchlora_callback
from .config import SwitchLoRAConfig
from .layer import CandidatePool, Linear, SwitchLoRALayer
from .model import SwitchLoRAModel
from .registration import register
from .schedule import SwitchSchedule
from .stepper import SwitchLoRAStepper, find_switchlora_model

register()

__all__ = [
    "CandidatePool",
    "Linear",
    "SwitchLoRACallback",
    "SwitchLoRAConfig",
    "SwitchLoRALayer",
    "SwitchLoRAModel",
    "SwitchLoRAStepper",
    "SwitchSchedule",
    "attach_switchlora_callback",
    "find_switchlora_model",
]
