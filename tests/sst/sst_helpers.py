"""Tiny models, data and references for the SST tests."""

import torch
from peft import get_peft_model
from transformers import TrainingArguments
from tuner_helpers import saved_activation_bytes, tiny_llama, token_dataset
from tuner_helpers import training_args as shared_training_args

from hf_pept.sst import SSTConfig

__all__ = [
    "TOKENS",
    "full_factors_reference",
    "saved_activation_bytes",
    "sst_layers",
    "sst_model",
    "tiny_llama",
    "token_dataset",
    "training_args",
    "weight_reference",
]

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def sst_model(seed: int = 0, **kwargs):
    config = {
        "r": 4,
        "iteration_steps": 3,
        "iteration_warmup_steps": 1,
        "modules_to_save": ["embed_tokens", "lm_head"],
    }
    return get_peft_model(tiny_llama(seed), SSTConfig(**{**config, **kwargs}))


def training_args(output_dir, **kwargs) -> TrainingArguments:
    return shared_training_args(str(output_dir), **kwargs)


def full_factors_reference(layer, name: str = "default"):
    """(U, Σ, V) in triplet order, assembled here from the layer's raw tensors (not through the layer's code)."""
    return _assemble(layer, name)


@torch.no_grad()
def _assemble(layer, name):
    k = layer.sst_sigma[name].numel()
    u = torch.zeros(layer.out_features, k, dtype=torch.float64)
    v = torch.zeros(layer.in_features, k, dtype=torch.float64)
    for slot, index in enumerate(layer.sst_active_index[name].tolist()):
        u[:, index] = layer.sst_U_active[name][:, slot].double()
        v[:, index] = layer.sst_V_active[name][:, slot].double()
    for slot, index in enumerate(layer.sst_frozen_index[name].tolist()):
        u[:, index] = layer.sst_U_frozen[name][:, slot].double()
        v[:, index] = layer.sst_V_frozen[name][:, slot].double()
    return u, layer.sst_sigma[name].detach().double(), v


def weight_reference(layer, name: str = "default") -> torch.Tensor:
    """W = Σᵢ Σᵢ·Uᵢ·Vᵢᵀ in float64."""
    u, s, v = full_factors_reference(layer, name)
    return torch.einsum("i,mi,ni->mn", s, u, v)


def sst_layers(model):
    return [layer for _, layer in model.base_model.sst_layers()]
