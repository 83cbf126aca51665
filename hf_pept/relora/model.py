"""``ReLoRAModel``: the peft tuner that puts ReLoRA layers into a model and runs the restarts.

ReLoRA (Lialin et al. 2023, arXiv 2307.05695, Algorithm 1): train LoRA factors; every T steps merge
W ← W + s·B A, re-initialise the factors, prune their optimizer state and re-warm the learning rate, so that the
accumulated update Σ_k s·B_k A_k reaches a rank far above r.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from ..tuners import (
    ALL_LINEAR,
    base_weight_entries,
    default_to_all_linear,
    derived_generator,
    linear_base,
    linear_modules,
    refuse_second_adapter,
    tuner_layers,
)
from .config import ReLoRAConfig
from .layer import Linear, ReLoRALayer


class ReLoRAModel(BaseTuner):
    """Adds ReLoRA adapters to a model; built by ``peft.get_peft_model(model, ReLoRAConfig(...))``.

    Beyond peft's tuner interface (``merge_and_unload``, ``save_pretrained`` through ``PeftModel``...) it offers
    :meth:`merge_and_reinit`, ReLoRA's restart. The Trainer integration (:class:`~hf_pept.relora.ReLoRACallback`)
    calls it together with the optimizer reset and the jagged learning rate.
    """

    prefix: str = "relora_"
    tuner_layer_cls = ReLoRALayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: ReLoRAConfig, model_config: dict) -> ReLoRAConfig:
        # The paper adapts every attention and MLP projection: all linear layers but the output head.
        return default_to_all_linear(peft_config)

    def _prepare_model(self, peft_config: ReLoRAConfig, model: nn.Module) -> None:
        if peft_config.layers_to_transform is not None and peft_config.target_modules == ALL_LINEAR:
            # target_modules=None with layers_to_transform. peft would expand 'all-linear' to full module names,
            # which it matches without its layer filter; the names' last segments (q_proj, ...) go through the
            # filter, which keeps the linear layers inside the chosen layers (so never the output head).
            peft_config.target_modules = {name.rsplit(".", 1)[-1] for name, _ in linear_modules(model)}

    def _check_new_adapter_config(self, config: ReLoRAConfig) -> None:
        super()._check_new_adapter_config(config)
        refuse_second_adapter(self, "ReLoRA trains a single adapter (merges fold it into the base weights)")

    def _create_and_replace(
        self,
        peft_config: ReLoRAConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(target, ReLoRALayer):
            target.update_layer(adapter_name, peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout)
            return
        linear_base(target, current_key, "ReLoRA adapts")
        new_module = Linear(target, adapter_name, peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        super()._mark_only_adapters_as_trainable(model)
        config = self.peft_config[self.active_adapters[0]]
        if config.warm_start_steps > 0 and not config.inference_mode:
            # Warm start trains the adapted weights full-rank; they must require grad now so that the optimizer,
            # built once before training, holds them. The callback freezes them when the low-rank cycles begin.
            self.set_base_weights_trainable(True)

    # ReLoRA-specific API

    def relora_layers(self) -> Iterator[tuple[str, ReLoRALayer]]:
        yield from tuner_layers(self.model, ReLoRALayer)

    def factor_parameters(self, adapter_name: str | None = None) -> list[nn.Parameter]:
        """The A and B matrices of ``adapter_name`` (default: the active adapter), in module order."""
        adapter_name = adapter_name or self.active_adapters[0]
        params = []
        for _, layer in self.relora_layers():
            if adapter_name in layer.relora_A:
                params.append(layer.relora_A[adapter_name].weight)
                params.append(layer.relora_B[adapter_name].weight)
        return params

    def base_weights(self) -> list[nn.Parameter]:
        """The weights W of the adapted layers (what merges change and warm start trains)."""
        return [layer.get_base_layer().weight for _, layer in self.relora_layers()]

    def set_base_weights_trainable(self, trainable: bool) -> None:
        for weight in self.base_weights():
            weight.requires_grad_(trainable)

    @torch.no_grad()
    def merge_and_reinit(self, adapter_name: str | None = None, *, seed: int | None = None, step: int = 0) -> int:
        """ReLoRA's restart in every adapted layer: W ← W + s·B A, A ~ Kaiming-uniform, B ← 0; returns #layers.

        In place (same ``Parameter`` objects, so optimizers keep them); the model's output is unchanged up to
        rounding. The new A is drawn from a generator derived from (``seed``, ``step``) — default seed: the
        config's ``reinit_seed`` — so data-parallel ranks and resumed runs draw identical factors.
        """
        adapter_name = adapter_name or self.active_adapters[0]
        seed = self.peft_config[adapter_name].reinit_seed if seed is None else seed
        generators: dict[torch.device, torch.Generator] = {}
        merged = 0
        for _, layer in self.relora_layers():
            if adapter_name not in layer.relora_A:
                continue
            if layer.merged:
                raise RuntimeError("unmerge the adapter (peft's merge_adapter) before a ReLoRA restart")
            device = layer.relora_A[adapter_name].weight.device
            if device not in generators:
                generators[device] = derived_generator(seed, step, device)
            layer.merge_and_reinit(adapter_name, generator=generators[device])
            merged += 1
        return merged

    # Saving: merges change W, so a checkpoint restores a run only with the adapted layers' weights.

    @classmethod
    def _get_adapter_state_dict(
        cls,
        model: nn.Module,
        config: ReLoRAConfig,
        adapter_name: str,
        state_dict: dict[str, torch.Tensor],
        unwanted_adapter_names: list[str],
    ) -> dict[str, torch.Tensor]:
        to_return = super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names)
        if getattr(config, "save_base_weights", False):
            to_return.update(base_weight_entries(model, ReLoRALayer, state_dict))
        return to_return
