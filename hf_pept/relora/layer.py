"""The ReLoRA-adapted linear layer.

Forward (LoRA, Hu et al. 2021, eq. 3):  h = W x + s · B A x,  s = α / r,  B: out×r,  A: r×in.

Unlike the reference ReLoRA code, which zero-initialises both factors (so neither receives a gradient and nothing
trains in the first cycle), A is Kaiming-uniform and B zero, as in LoRA: the product starts at zero but B's gradient
sᵀ·(∂L/∂h)(A x)ᵀ does not. ``merge_and_reinit`` is ReLoRA's restart (Lialin et al. 2023, eq. 2): W ← W + s·B A,
then A redrawn and B zeroed, in place, so the optimizer keeps referring to the same ``Parameter`` objects.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from ..kernels.lora_merge import merge_lora_


class ReLoRALayer(BaseTunerLayer):
    """State shared by ReLoRA layers: one (A, B, dropout, scaling) per adapter name."""

    adapter_layer_names = ("relora_A", "relora_B")
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
        nn.init.kaiming_uniform_(lora_A, a=math.sqrt(5), generator=generator)
        self.relora_B[adapter_name].weight.zero_()

    def get_delta_weight(self, adapter_name: str) -> torch.Tensor:
        """ΔW = s · B A (fp32)."""
        lora_A = self.relora_A[adapter_name].weight.float()
        lora_B = self.relora_B[adapter_name].weight.float()
        return self.scaling[adapter_name] * (lora_B @ lora_A)

    @torch.no_grad()
    def merge_and_reinit(self, adapter_name: str, generator: torch.Generator | None = None) -> None:
        """W ← W + s·B A (fp32 accumulation), then A redrawn, B zeroed: the layer's output is unchanged."""
        weight = self.get_base_layer().weight
        merge_lora_(
            weight.data,
            self.relora_A[adapter_name].weight,
            self.relora_B[adapter_name].weight,
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

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """peft's merge (used by ``merge_and_unload``): W ← W + s·B A, the factors stay as they are."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        weight = self.get_base_layer().weight
        for name in adapter_names:
            if name not in self.relora_A:
                continue
            lora_A, lora_B = self.relora_A[name].weight, self.relora_B[name].weight
            with torch.no_grad():
                if safe_merge:
                    merged = weight.data.clone()
                    merge_lora_(merged, lora_A, lora_B, self.scaling[name])
                    if not torch.isfinite(merged).all():
                        # peft's tuners' wording, word for word
                        raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
                    weight.data.copy_(merged)
                else:
                    merge_lora_(weight.data, lora_A, lora_B, self.scaling[name])
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        weight = self.get_base_layer().weight
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.relora_A:
                with torch.no_grad():
                    merge_lora_(
                        weight.data, self.relora_A[name].weight, self.relora_B[name].weight, -self.scaling[name]
                    )

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        result = self.base_layer(x, *args, **kwargs)
        if self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.relora_A:
                continue
            lora_A, lora_B = self.relora_A[name], self.relora_B[name]
            x_adapter = self._cast_input_dtype(x, lora_A.weight.dtype)
            update = lora_B(lora_A(self.relora_dropout[name](x_adapter))) * self.scaling[name]
            result = result + update.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "relora." + super().__repr__()
