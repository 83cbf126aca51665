"""SST, Sparse Spectral Training (Zhao et al. 2025, arXiv 2405.15481), as a peft tuner that runs itself inside
``transformers.Trainer``.

Importing this package registers ``PeftType.SST`` with peft and the automatic Trainer callback.

The docstrings cite the paper by section (§4.1 preliminaries, §4.2 the gradients, §4.3 SVD initialisation, §4.4
sampling, §4.5 the memory-efficient implementation, Appendix A the algorithm, Appendix D the enhanced gradient);
its equation numbers could not be retrieved here, so none are quoted. The authors' code could not be read either:
where the paper is silent, the docstring of the code concerned says so and what we chose.
"""

from .callback import SSTCallback, attach_sst_callback
from .config import SSTConfig
from .layer import Linear, SpectralLinearFunction, SSTLayer
from .model import SSTModel
from .registration import register
from .sampling import sample_active, sampling_probabilities
from .schedule import SSTSchedule, apply_iteration_warmup
from .stepper import SSTStepper, find_sst_model, restart_optimizer_state

register()

__all__ = [
    "Linear",
    "SSTCallback",
    "SSTConfig",
    "SSTLayer",
    "SSTModel",
    "SSTSchedule",
    "SSTStepper",
    "SpectralLinearFunction",
    "apply_iteration_warmup",
    "attach_sst_callback",
    "find_sst_model",
    "restart_optimizer_state",
    "sample_active",
    "sampling_probabilities",
]
