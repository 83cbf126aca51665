"""The ReLoRA-adapted linear layer.

Forward (LoRA, Hu et al. 2021, eq. 3):  h = W x + s · B A x,  s = α / r,  B: out×r,  A: r×in.

Unlike the reference ReLoRA code, which zero-initialises both factors (so neither receives a gradient and nothing
trains in the first cycle), A is Kaiming-uniform and B zero, as in LoRA: the product starts at zero but B's gradient
sᵀ·(∂L/∂h)(A x)ᵀ does not. ``merge_and_reinit`` is ReLoRA's restart (Lialin et al. 2023, eq. 2): W ← W + s·B A,
then A redrawn and B zeroed, in place, so the optimizer keeps referring to the same ``Parameter`` objects.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..fsdp import check_row_sharded, gathered, is_dtensor, local, local_rows
from ..kernels.lora_merge import merge_lora_
from ..tuners import LowRankLinearMixin


class ReLoRALayer(LowRankLinearMixin, BaseTunerLayer):
    """State shared by ReLoRA layers: one (A, B, dropout, scaling) per adapter name; ΔW, merge, unmerge and the
    LoRA forward come from :class:`~hf_pept.tuners.LowRankLinearMixin`."""

    adapter_layer_names = ("relora_A", "relora_B")
    lowrank_dropout = "relora_dropout"
    other_param_names = ("r", "lora_alpha", "scaling", "relora_dropout")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.relora_dropout = nn.ModuleDict({})
        self.relora_A = nn.ModuleDict({})
        self.relora_B = nn.ModuleDict({})
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"ReLoRA adapts torch.nn.Linear layers only, got {type(base).__name__}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.kwargs = kwargs

    def update_layer(self, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float) -> None:
        if r <= 0:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        self.relora_dropout[adapter_name] = dropout
        self.relora_A[adapter_name] = nn.Linear(self.in_features, r, bias=False)
        self.relora_B[adapter_name] = nn.Linear(r, self.out_features, bias=False)
        self.reset_factors(adapter_name)
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    @torch.no_grad()
    def reset_factors(self, adapter_name: str, generator: torch.Generator | None = None) -> None:
        """A ~ Kaiming-uniform (bound 1/√in, LoRA's init, i.e. ``kaiming_uniform_(a=√5)``), B = 0, in place."""
        lora_A = self.relora_A[adapter_name].weight
        if is_dtensor(lora_A):
            # FSDP2: every rank draws the whole A from the shared generator and keeps its rows, so the shards
            # together hold the single-process draw.
            whole = torch.empty(lora_A.shape, dtype=lora_A.dtype, device=lora_A.device)
            nn.init.kaiming_uniform_(whole, a=math.sqrt(5), generator=generator)
            local(lora_A).copy_(local_rows(whole, lora_A))
        else:
            nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5), generator=generator)
        local(self.relora_B[adapter_name].weight).zero_()

    @torch.no_grad()
    def merge_and_reinit(self, adapter_name: str, generator: torch.Generator | None = None) -> None:
        """W ← W + s·B A (fp32 accumulation), then A redrawn, B zeroed: the layer's output is unchanged."""
        weight = self.get_base_layer().weight
        lora_B = self.relora_B[adapter_name].weight
        check_row_sharded(weight, "ReLoRA's merge")
        # FSDP2 shards W (out×in) and B (out×r) by the same rows, so each rank merges its rows, W_i += s·B_i A,
        # and needs only the whole A (r×in: one all-gather of the small factor).
        merge_lora_(
            local(weight.data),
            gathered(self.relora_A[adapter_name].weight),
            local(lora_B),
            self.scaling[adapter_name],
        )
        self.reset_factors(adapter_name, generator=generator)


class Linear(nn.Module, ReLoRALayer):
    """``nn.Linear`` with a ReLoRA adapter."""

    def __init__(
        self, base_layer: nn.Module, adapter_name: str, r: int, lora_alpha: float, lora_dropout: float, **kwargs
    ) -> None:
        super().__init__()
        ReLoRALayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, lora_dropout)

    forward = LowRankLinearMixin.lowrank_forward

    def __repr__(self) -> str:
        return "relora." + super().__repr__()
