"""Tiny models, data and references for the SST tests."""

import torch
from peft import get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from hf_pept.sst import SSTConfig

TOKENS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))


def tiny_llama(seed: int = 0, vocab_size: int = 128, hidden_size: int = 32, layers: int = 2) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config)


def sst_model(seed: int = 0, **kwargs):
    config = {
        "r": 4,
        "iteration_steps": 3,
        "iteration_warmup_steps": 1,
        "modules_to_save": ["embed_tokens", "lm_head"],
    }
    return get_peft_model(tiny_llama(seed), SSTConfig(**{**config, **kwargs}))


def token_dataset(n: int = 64, length: int = 16, vocab_size: int = 128, seed: int = 0) -> list[dict]:
    """Sequences with structure to learn (each token is the previous plus a per-row step, mod vocab)."""
    generator = torch.Generator().manual_seed(seed)
    start = torch.randint(0, vocab_size, (n, 1), generator=generator)
    stride = torch.randint(1, 4, (n, 1), generator=generator)
    tokens = (start + stride * torch.arange(length)) % vocab_size
    return [{"input_ids": row, "labels": row} for row in tokens]


def training_args(output_dir, **kwargs) -> TrainingArguments:
    defaults = {
        "max_steps": 8,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "lr_scheduler_type": "constant",
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    return TrainingArguments(str(output_dir), **{**defaults, **kwargs})


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


def saved_activation_bytes(model, ids) -> int:
    """Bytes of the tensors autograd saves for backward (parameters excluded), each storage counted once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids, labels=ids).loss.backward()
    return sum(saved.values())
