"""SST's option group of ``hf-pept train`` (and the app's form), mirrored from :class:`SSTConfig`."""

from ..knobs import mirror_config
from .config import SSTConfig

SSTArguments = mirror_config(
    "SSTArguments",
    "SST iterations",
    "SST's schedule and sampling knobs (Zhao et al. 2025, §4 and Appendix A), mirrored from SSTConfig.",
    SSTConfig,
    {
        "iteration_steps": "iteration_steps",
        "round_iterations": "round_iterations",
        "iteration_warmup_steps": "iteration_warmup_steps",
        "sampling": "sst_sampling",
        "enhanced_gradient": "enhanced_gradient",
    },
)

__all__ = ["SSTArguments"]
