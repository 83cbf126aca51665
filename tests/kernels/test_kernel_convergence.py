"""Convergence with and without the kernels: same seed, 50 steps, the loss curves agree.

A tiny LLaMA is trained twice from the same initialisation on the same batches, once through the PyTorch
references and once with every dispatcher sent to the Triton kernels (on CPU: Triton's interpreter, forced by
patching the dispatchers' ``kernels_enabled``; on CUDA: the ordinary dispatch, against ``HF_PEPT_DISABLE_KERNELS=1``).
GaLore runs the fused Adam update and the back-projection GEMM (also forced to Triton, which the dispatcher only
takes where measured faster); ReLoRA merges every 10 steps with the Triton merge and magnitude-prunes with the
radix-select kernel.
"""

import pytest
import torch

import hf_pept
from hf_pept.kernels import galore_update, lora_merge, magnitude_prune
from hf_pept.models import build_llama

STEPS = 50
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# The interpreter costs tens of milliseconds per launch: on CPU two weights, one projected on each side.
CPU_TARGETS = ["gate_proj", "down_proj"]


def _model(device):
    model = build_llama(
        "tiny",
        128,
        max_position_embeddings=16,
        seed=0,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        attn_implementation="eager",
    )
    return model.to(device)


def _batches(device):
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 128, (4, 16), generator=generator).to(device) for _ in range(STEPS)]


def _galore_losses(device, targets):
    model = _model(device)
    named = list(model.named_parameters())
    projected = [p for n, p in named if p.dim() == 2 and any(t in n for t in targets)]
    regular = [p for n, p in named if not (p.dim() == 2 and any(t in n for t in targets))]
    groups = [{"params": regular}, {"params": projected, "rank": 4, "update_proj_gap": 20, "scale": 0.25}]
    optimizer = hf_pept.GaLoreAdamW(groups, lr=3e-3, weight_decay=0.01)
    losses = []
    for batch in _batches(device):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def _relora_losses(device, targets):
    from peft import get_peft_model

    from hf_pept.relora.stepper import ReLoRAStepper

    config = hf_pept.ReLoRAConfig(
        r=4,
        lora_alpha=8,
        lora_dropout=0.0,
        target_modules=targets,
        relora_steps=10,
        restart_warmup_steps=2,
        optimizer_reset="magnitude",
        prune_ratio=0.9,
    )
    torch.manual_seed(0)  # LoRA's Kaiming-uniform init of A draws from the global generator
    model = get_peft_model(_model(device), config)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    stepper = ReLoRAStepper(model, optimizer)
    losses, merges = [], 0
    for batch in _batches(device):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        merges += sum(event["event"] == "relora_merge" for event in stepper.step())
        losses.append(loss.item())
    assert merges == STEPS // 10
    return losses


def _force_kernels(monkeypatch):
    for module in (galore_update, lora_merge, magnitude_prune):
        monkeypatch.setattr(module, "kernels_enabled", lambda tensor: True)
    monkeypatch.setattr(galore_update, "TRITON_WEIGHT_UPDATE_DTYPES", frozenset({torch.float32, torch.bfloat16}))


def _assert_same_curve(reference, with_kernels, rtol):
    assert reference[-1] < reference[0]  # it trains
    torch.testing.assert_close(torch.tensor(with_kernels), torch.tensor(reference), rtol=rtol, atol=0)


LAUNCHERS = {
    "galore": ("adam_lowrank_update_triton", "lowrank_weight_update_triton"),
    "relora": ("merge_lora_triton", "magnitude_prune_triton"),
}


def _count_triton_calls(monkeypatch) -> dict[str, int]:
    from hf_pept.kernels import dispatch, galore_update_triton, lora_merge_triton, magnitude_prune_triton

    counts: dict[str, int] = {}
    modules = {
        "adam_lowrank_update_triton": galore_update_triton,
        "lowrank_weight_update_triton": galore_update_triton,
        "merge_lora_triton": lora_merge_triton,
        "magnitude_prune_triton": magnitude_prune_triton,
    }
    for name, module in modules.items():
        original = getattr(module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    dispatch.triton_op.cache_clear()
    return counts


@pytest.mark.parametrize("method", ["galore", "relora"])
def test_losses_with_kernels_follow_the_reference_interpreted(interpreter, monkeypatch, method):
    run = _galore_losses if method == "galore" else _relora_losses
    torch.set_num_threads(1)
    reference = run("cpu", CPU_TARGETS)
    _force_kernels(monkeypatch)
    counts = _count_triton_calls(monkeypatch)
    with_kernels = run("cpu", CPU_TARGETS)
    assert all(counts.get(name) for name in LAUNCHERS[method]), counts  # the kernels really ran
    _assert_same_curve(reference, with_kernels, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["galore", "relora"])
def test_losses_with_kernels_follow_the_reference_cuda(monkeypatch, method):
    run = _galore_losses if method == "galore" else _relora_losses
    monkeypatch.setenv("HF_PEPT_DISABLE_KERNELS", "1")
    reference = run("cuda", TARGETS)
    monkeypatch.delenv("HF_PEPT_DISABLE_KERNELS")
    monkeypatch.setattr(galore_update, "TRITON_WEIGHT_UPDATE_DTYPES", frozenset({torch.float32, torch.bfloat16}))
    counts = _count_triton_calls(monkeypatch)
    with_kernels = run("cuda", TARGETS)
    assert all(counts.get(name) for name in LAUNCHERS[method]), counts
    # fp32 on CUDA: cuBLAS and Triton sum in different orders, and TF32 may be allowed for matmuls.
    _assert_same_curve(reference, with_kernels, rtol=1e-3)
