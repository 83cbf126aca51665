"""GaLore AdamW with the low-rank moments in bitsandbytes' 8-bit blockwise format.

Dettmers et al. 2022 ("8-bit Optimizers via Block-wise Quantization", arXiv 2110.02861): each moment is stored as
uint8 codes of a dynamic quantization map plus one fp32 absmax per block of 256 values. The projected moments are
small (r×n), so each step dequantizes them to fp32, runs the same Adam math as :class:`GaLoreAdamW`, and quantizes
them back. bitsandbytes is optional: without it the moments stay in the parameter dtype (one warning).
"""

from __future__ import annotations

import importlib.util
import warnings

import torch

from ..kernels.galore_update import adam_lowrank_update
from .optimizer import GaLoreAdamW

BLOCKSIZE = 256
_INSTALL_HINT = "pip install bitsandbytes"


def bitsandbytes_available() -> bool:
    return importlib.util.find_spec("bitsandbytes") is not None


class GaLoreAdamW8bit(GaLoreAdamW):
    """:class:`GaLoreAdamW` whose projected moments M, V are 8-bit blockwise-quantized (bitsandbytes).

    Full-rank parameters (embeddings, norms, small matrices) keep AdamW moments in their own dtype.
    Not on FSDP2-sharded weights: the blocks of 256 codes and their scales do not follow the weight's row shards.
    """

    supports_row_sharding = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, *, layerwise=False):
        # batched=False: the 8-bit moments are dequantized, updated and requantized per weight
        super().__init__(
            params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, layerwise=layerwise, batched=False
        )
        self.quantized = bitsandbytes_available()
        self._codes: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        if not self.quantized:
            warnings.warn(
                f"GaLoreAdamW8bit: bitsandbytes is not installed, so the low-rank moments are kept unquantized "
                f"(same math, more memory). Install it with `{_INSTALL_HINT}` for 8-bit state.",
                stacklevel=2,
            )

    def _dynamic_codes(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._codes:
            from bitsandbytes.functional import create_dynamic_map

            signed = create_dynamic_map(signed=True).to(device)
            unsigned = create_dynamic_map(signed=False).to(device)
            self._codes[device] = (signed, unsigned)
        return self._codes[device]

    def _lowrank_update(self, group, state, lowrank_grad, step):
        if not self.quantized:
            return super()._lowrank_update(group, state, lowrank_grad, step)
        from bitsandbytes.functional import dequantize_blockwise, quantize_blockwise

        signed, unsigned = self._dynamic_codes(lowrank_grad.device)
        if "exp_avg_q" not in state:
            exp_avg = torch.zeros_like(lowrank_grad, dtype=torch.float32)
            exp_avg_sq = torch.zeros_like(lowrank_grad, dtype=torch.float32)
        else:
            exp_avg = dequantize_blockwise(
                state["exp_avg_q"], absmax=state["exp_avg_absmax"], code=signed, blocksize=BLOCKSIZE
            )
            exp_avg_sq = dequantize_blockwise(
                state["exp_avg_sq_q"], absmax=state["exp_avg_sq_absmax"], code=unsigned, blocksize=BLOCKSIZE
            )
        beta1, beta2 = group["betas"]
        update = adam_lowrank_update(
            lowrank_grad, exp_avg, exp_avg_sq, beta1=beta1, beta2=beta2, eps=group["eps"], step=step
        )
        for name, moment, code in (("exp_avg", exp_avg, signed), ("exp_avg_sq", exp_avg_sq, unsigned)):
            codes, quant_state = quantize_blockwise(moment, code=code, blocksize=BLOCKSIZE)
            state[f"{name}_q"] = codes
            state[f"{name}_absmax"] = quant_state.absmax.float()
        return update
