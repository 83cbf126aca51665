"""``SSTModel``: the peft tuner that decomposes linear layers and runs SST's resampling and re-SVD.

Sparse Spectral Training (Zhao et al. 2025, arXiv 2405.15481, Appendix A "Algorithm of Sparse Spectral Training"):
every targeted W becomes U·diag(Σ)·Vᵀ from its SVD; Σ trains at every step, r sampled singular vectors of U and V
train per iteration of T3 steps, and after T2 iterations (a round) U·diag(Σ)·Vᵀ is decomposed again, which restores
orthogonality and re-ranks the directions. Over many iterations every direction is updated, so the accumulated
update is full-rank while gradients and optimizer state exist for Σ and r vectors per layer only.

Everything random here is drawn from a CPU generator seeded by (``sample_seed``, step): data-parallel ranks and
resumed runs draw the same vectors. Under ``torch.distributed`` the draws and the re-SVD factors are also broadcast
from rank 0, so ranks cannot drift apart by a rounding difference.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from ..tuners import ALL_LINEAR as ALL_LINEAR  # importable from here, as before
from ..tuners import default_to_all_linear, derived_generator, linear_base, refuse_second_adapter
from .config import SSTConfig
from .layer import Linear, SSTLayer
from .sampling import sample_active

_SAMPLE_STREAM = 2


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _broadcast_from_rank0(tensors: list[torch.Tensor]) -> None:
    """Overwrite ``tensors`` (in place) with rank 0's values when several ranks run; a no-op otherwise."""
    if not _distributed() or torch.distributed.get_world_size() < 2:
        return
    for tensor in tensors:
        torch.distributed.broadcast(tensor, src=0)


class SSTModel(BaseTuner):
    """Decomposes linear layers for SST; built by ``peft.get_peft_model(model, SSTConfig(...))``.

    Beyond peft's tuner interface (``merge_and_unload``, ``save_pretrained`` through ``PeftModel``...) it offers
    :meth:`resample`, :meth:`resvd` and :meth:`project`, which :class:`~hf_pept.sst.SSTStepper` (and the Trainer
    callback around it) calls on SST's schedule.
    """

    prefix: str = "sst_"
    tuner_layer_cls = SSTLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: SSTConfig, model_config: dict) -> SSTConfig:
        # All linear layers but the output head, as the paper's LLM runs.
        return default_to_all_linear(peft_config)

    def _check_new_adapter_config(self, config: SSTConfig) -> None:
        super()._check_new_adapter_config(config)
        refuse_second_adapter(self, "SST holds a single adapter (it replaces the weights themselves)")

    def _create_and_replace(
        self,
        peft_config: SSTConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, SSTLayer):
            raise ValueError(f"{current_key!r} is already SST-decomposed")
        base = linear_base(target, current_key, "SST decomposes")
        if base.weight.device.type == "meta":
            raise ValueError(
                f"{current_key!r} has its weight on the meta device; SST decomposes the weight when it wraps the "
                "model, so load the model's weights first (low_cpu_mem_usage is not supported)"
            )
        try:
            new_module = Linear(target, adapter_name, peft_config.r, peft_config.enhanced_gradient)
        except ValueError as error:
            raise ValueError(f"{current_key}: {error}") from None
        self._replace_module(parent, target_name, new_module, target)

    def _post_injection_hook(self, model: nn.Module, config: SSTConfig, adapter_name: str) -> None:
        # The first iteration's vectors, drawn as every later iteration's (step 0 of the seeded stream).
        self.resample(adapter_name, step=0)

    # ---- SST-specific API -------------------------------------------------------------------------------------

    def sst_layers(self, adapter_name: str | None = None) -> Iterator[tuple[str, SSTLayer]]:
        adapter_name = adapter_name or self.active_adapters[0]
        for name, module in self.model.named_modules():
            if isinstance(module, SSTLayer) and adapter_name in module.sst_sigma:
                yield name, module

    def sigma_parameters(self, adapter_name: str | None = None) -> list[nn.Parameter]:
        adapter_name = adapter_name or self.active_adapters[0]
        return [layer.sst_sigma[adapter_name] for _, layer in self.sst_layers(adapter_name)]

    def active_vector_parameters(self, adapter_name: str | None = None) -> list[nn.Parameter]:
        """The active columns of U and V of every layer (the Parameters whose state restarts at a resample)."""
        adapter_name = adapter_name or self.active_adapters[0]
        params = []
        for _, layer in self.sst_layers(adapter_name):
            params += [layer.sst_U_active[adapter_name], layer.sst_V_active[adapter_name]]
        return params

    def trainable_sst_parameters(self, adapter_name: str | None = None) -> list[nn.Parameter]:
        """Σ and the active columns of U and V of every layer, in module order."""
        return self.sigma_parameters(adapter_name) + self.active_vector_parameters(adapter_name)

    def round_iterations(self, adapter_name: str | None = None) -> int:
        """T2: the config's ``round_iterations``, or the paper's d/r rounded up with d the largest min(out, in)."""
        adapter_name = adapter_name or self.active_adapters[0]
        config = self.peft_config[adapter_name]
        if config.round_iterations is not None:
            return config.round_iterations
        widest = max((layer.rank_limit for _, layer in self.sst_layers(adapter_name)), default=config.r)
        return max(1, math.ceil(widest / config.r))

    @torch.no_grad()
    def draw_active(self, adapter_name: str | None = None, *, step: int) -> list[torch.Tensor]:
        """The active triplet indices each layer would get at ``step`` (seeded by ``sample_seed`` and the step; the
        layers draw in module order from one stream), without changing anything."""
        adapter_name = adapter_name or self.active_adapters[0]
        config = self.peft_config[adapter_name]
        generator = derived_generator(config.sample_seed, step, "cpu", _SAMPLE_STREAM)
        return [
            sample_active(layer.sst_sigma[adapter_name], layer.r[adapter_name], config.sampling, generator)
            for _, layer in self.sst_layers(adapter_name)
        ]

    @torch.no_grad()
    def resample(self, adapter_name: str | None = None, *, step: int) -> dict[str, int]:
        """Start an iteration: draw r vectors per layer (:meth:`draw_active`) and swap them into the active
        partition. Returns ``{"layers": n, "vectors_changed": how many columns entered the active partitions}``."""
        adapter_name = adapter_name or self.active_adapters[0]
        layers = [layer for _, layer in self.sst_layers(adapter_name)]
        draws = self.draw_active(adapter_name, step=step)
        if draws and _distributed():
            flat = torch.cat(draws).to(layers[0].sst_sigma[adapter_name].device)
            _broadcast_from_rank0([flat])
            draws = list(flat.split([d.numel() for d in draws]))
        changed = sum(layer.swap_in(adapter_name, active) for layer, active in zip(layers, draws))
        return {"layers": len(layers), "vectors_changed": changed}

    @torch.no_grad()
    def resvd(self, adapter_name: str | None = None) -> dict[str, Any]:
        """End a round: [U, Σ, Vᵀ] ← SVD(U·diag(Σ)·Vᵀ) in every layer. Returns ``{"layers": n,
        "orthogonality_error": the largest |UᵀU − I| or |VᵀV − I| entry before the re-SVD}``."""
        adapter_name = adapter_name or self.active_adapters[0]
        layers = [layer for _, layer in self.sst_layers(adapter_name)]
        error = max((layer.resvd(adapter_name) for layer in layers), default=0.0)
        if _distributed():
            _broadcast_from_rank0([t for layer in layers for t in layer.partitions(adapter_name)[:5]])
        return {"layers": len(layers), "orthogonality_error": error}

    @torch.no_grad()
    def project(self, adapter_name: str | None = None) -> None:
        """After an optimizer step: Σ ≥ 0 and unit-norm active columns in every layer."""
        adapter_name = adapter_name or self.active_adapters[0]
        for _, layer in self.sst_layers(adapter_name):
            layer.project(adapter_name)
