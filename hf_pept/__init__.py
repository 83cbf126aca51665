"""hf-pept: memory-efficient LLM pre-training (ReLoRA, SwitchLoRA, SST, GaLore, CoLA, CR-Net and their family) for the
Hugging Face stack.

``import hf_pept`` is all a user adds: it registers our GaLore optimizers under transformers' stock ``optim``
names, ReLoRA, SwitchLoRA and SST as peft tuners, CoLA (``model_type="cola"``) and CR-Net
(``model_type="crnet"``) with the transformers Auto classes. Registration is idempotent and touches nothing else.
"""

__version__ = "0.1.0"

from .cola import CoLAConfig, CoLAForCausalLM  # noqa: E402  (registers with the Auto classes)
from .crnet import CRNetConfig, CRNetForCausalLM  # noqa: E402  (registers with the Auto classes)
from .events import record_event  # noqa: E402
from .galore import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit  # noqa: E402
from .galore.integration import register_galore  # noqa: E402
from .relora import ReLoRACallback, ReLoRAConfig, ReLoRAModel, ReLoRAStepper  # noqa: E402  (registers with peft)
from .sst import SSTCallback, SSTConfig, SSTModel, SSTStepper  # noqa: E402  (registers with peft)
from .switchlora import (  # noqa: E402  (registers with peft)
    SwitchLoRACallback,
    SwitchLoRAConfig,
    SwitchLoRAModel,
    SwitchLoRAStepper,
)

register_galore()

__all__ = ["__version__", "record_event", "GaLoreAdamW", "GaLoreAdamW8bit", "GaLoreAdafactor"]
__all__ += ["ReLoRAConfig", "ReLoRAModel", "ReLoRACallback", "ReLoRAStepper"]
__all__ += ["SwitchLoRAConfig", "SwitchLoRAModel", "SwitchLoRACallback", "SwitchLoRAStepper"]
__all__ += ["SSTConfig", "SSTModel", "SSTCallback", "SSTStepper"]
__all__ += ["CoLAConfig", "CoLAForCausalLM"]
__all__ += ["CRNetConfig", "CRNetForCausalLM"]
