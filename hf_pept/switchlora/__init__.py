"""SwitchLoRA (Zhou et al. 2024, arXiv 2406.06564) as a peft tuner that runs itself inside ``transformers.Trainer``.

Importing this package registers ``PeftType.SWITCHLORA`` with peft and the automatic Trainer callback.

The formulas in these modules are those of the authors' Apache-2.0 code (github.com/asfsdsf/SwitchLoRA:
``switchlora/switch_lora.py`` for the switch and schedule, ``switchlora/lora_utils.py`` for the init,
``switchlora/optimizer.py`` for the per-vector Adam step), against which the numerics were checked; where that code and the paper leave a choice
open, the module that makes it says what we chose and why.
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
