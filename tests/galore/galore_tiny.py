"""Tiny LLaMA + random-token data + TrainingArguments factory shared by the GaLore Trainer and DDP tests."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

VOCAB, SEQ = 128, 16


class RandomTokens(torch.utils.data.Dataset):
    def __init__(self, num_samples=32, seed=0):
        self.ids = torch.randint(0, VOCAB, (num_samples, SEQ), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_llama(seed=0):
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
    )
    return LlamaForCausalLM(config)


def galore_args(output_dir, optim, **overrides):
    kwargs = {
        "optim": optim,
        "optim_target_modules": [r".*attn.*", r".*mlp.*"],
        "optim_args": "rank=8,update_proj_gap=5,scale=0.25",
        "report_to": [],
        "use_cpu": True,
        "max_steps": 10,
        "save_steps": 5,
        "logging_steps": 1,
        "per_device_train_batch_size": 4,
        "learning_rate": 1e-2,
        "weight_decay": 0.01,
        "disable_tqdm": True,
        "seed": 0,
        "max_grad_norm": 0.0 if optim.endswith("layerwise") else 1.0,
    }
    kwargs.update(overrides)
    return TrainingArguments(str(output_dir), **kwargs)


def logged(trainer, key="loss"):
    return {h["step"]: h[key] for h in trainer.state.log_history if key in h}
