"""GaLore's option group of ``hf-pept train`` (and the app's form), mirrored from :class:`GaLoreConfig`.

``scale`` is ``--galore_scale`` on the command line (a bare ``--scale`` would not say whose scale it is).
"""

from ..knobs import mirror_config
from .config import GaLoreConfig

GaLoreArguments = mirror_config(
    "GaLoreArguments",
    "GaLore projection",
    "GaLore's projection knobs (Zhao et al. 2024, Algorithm 1), mirrored from GaLoreConfig.",
    GaLoreConfig,
    {
        "update_proj_gap": "update_proj_gap",
        "scale": "galore_scale",
        "proj_type": "proj_type",
        "proj_method": "proj_method",
        "oversampling": "oversampling",
        "power_iters": "power_iters",
        "fira": "fira",
        "fira_limiter": "fira_limiter",
    },
)

__all__ = ["GaLoreArguments"]
