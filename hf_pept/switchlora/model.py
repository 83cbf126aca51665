"""``SwitchLoRAModel``: the peft tuner that puts SwitchLoRA layers into a model.

SwitchLoRA (Zhou et al. 2024, arXiv 2406.06564): LoRA factors whose single rows of A / columns of B are swapped for
candidate vectors, often early in training and rarely later, each swap folded into W so the function is unchanged.
The per-step work (switches, freezes, optimizer-state resets) is :class:`~hf_pept.switchlora.SwitchLoRAStepper`'s,
run inside ``transformers.Trainer`` by :class:`~hf_pept.switchlora.SwitchLoRACallback`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

from ..tuners import base_weight_entries, derived_generator, linear_modules, refuse_second_adapter, tuner_layers
from .config import SwitchLoRAConfig
from .layer import Linear, SwitchLoRALayer

# The paper adapts the linear layers of attention and MLP blocks (the authors' code matches these names).
BLOCK_NAME = re.compile(r"attn|attention|mlp", re.IGNORECASE)
_INIT_STREAM = 2


def block_linear_names(model: nn.Module) -> set[str]:
    """Targets for ``target_modules=None``: the names of the ``nn.Linear`` modules inside attention / MLP blocks.

    Their last name components (``q_proj``, ``down_proj``, ...) when no linear elsewhere shares one, else full
    module paths; the output head is never included.
    """
    inside, outside = [], set()
    for name, _ in linear_modules(model):
        parents = name.split(".")[:-1]
        (inside.append(name) if any(BLOCK_NAME.search(part) for part in parents) else outside.add(name))
    if not inside:
        raise ValueError(
            "target_modules=None adapts the linear layers inside attention / MLP blocks (module paths containing "
            "'attn', 'attention' or 'mlp'), and this model has none; pass target_modules explicitly"
        )
    leaves = {name.rsplit(".", 1)[-1] for name in inside}
    if leaves & {name.rsplit(".", 1)[-1] for name in outside}:
        return set(inside)
    return leaves


class SwitchLoRAModel(BaseTuner):
    """Adds SwitchLoRA adapters to a model; built by ``peft.get_peft_model(model, SwitchLoRAConfig(...))``.

    peft's tuner interface (``merge_and_unload``, ``save_pretrained`` / ``from_pretrained`` through ``PeftModel``)
    plus :meth:`switchlora_layers` and :meth:`factor_parameters` for the stepper. Adapters hold copies of
    candidate-pool slots and the base weights are W − s·B₀A₀, so wrapping leaves the model's output unchanged.
    """

    prefix: str = "switchlora_"
    tuner_layer_cls = SwitchLoRALayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: SwitchLoRAConfig, model_config: dict) -> SwitchLoRAConfig:
        if peft_config.target_modules is None:
            peft_config.target_modules = block_linear_names(self.model)
        return peft_config

    def _check_new_adapter_config(self, config: SwitchLoRAConfig) -> None:
        super()._check_new_adapter_config(config)
        refuse_second_adapter(self, "SwitchLoRA trains a single adapter (switches fold into the base weights)")

    def _create_and_replace(
        self,
        peft_config: SwitchLoRAConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        parameter_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if isinstance(target, SwitchLoRALayer) or not isinstance(base, nn.Linear):
            raise TypeError(
                f"SwitchLoRA adapts torch.nn.Linear layers once; {current_key!r} is a {type(target).__name__}. "
                "Narrow target_modules or add it to exclude_modules."
            )
        # Pools and factors from a stream of (seed, module name): identical on every rank, whatever the global RNG.
        generator = derived_generator(peft_config.switch_seed, zlib.crc32(current_key.encode()), "cpu", _INIT_STREAM)
        new_module = Linear(
            target,
            adapter_name,
            peft_config.r,
            peft_config.lora_alpha,
            peft_config.lora_dropout,
            init=peft_config.init_lora_weights,
            offload=peft_config.offload_candidates,
            generator=generator,
        )
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    # SwitchLoRA-specific API

    def switchlora_layers(self) -> Iterator[tuple[str, SwitchLoRALayer]]:
        yield from tuner_layers(self.model, SwitchLoRALayer)

    def factor_parameters(self, adapter_name: str | None = None) -> list[nn.Parameter]:
        """The A and B matrices of ``adapter_name`` (default: the active adapter), in module order."""
        adapter_name = adapter_name or self.active_adapters[0]
        params = []
        for _, layer in self.switchlora_layers():
            if adapter_name in layer.switchlora_A:
                params.append(layer.switchlora_A[adapter_name].weight)
                params.append(layer.switchlora_B[adapter_name].weight)
        return params

    def candidate_host_bytes(self) -> int:
        """Bytes of switching state (pools when offloaded, counters) held in host memory."""
        return sum(
            pool.host_bytes() for _, layer in self.switchlora_layers() for pool in layer.switchlora_pool.values()
        )

    # Saving: switches fold into W, so only a checkpoint with the adapted layers' weights restores a run.

    @classmethod
    def _get_adapter_state_dict(
        cls,
        model: nn.Module,
        config: SwitchLoRAConfig,
        adapter_name: str,
        state_dict: dict[str, torch.Tensor],
        unwanted_adapter_names: list[str],
    ) -> dict[str, torch.Tensor]:
        to_return = super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names)
        to_return.update(base_weight_entries(model, SwitchLoRALayer, state_dict))
        return to_return
