"""The batched ordinary GaLore-AdamW step against the per-weight path (the reference), and its op count."""

import copy

import pytest
import torch

from hf_pept.galore import GaLoreAdamW
from hf_pept.galore.config import GaLoreConfig
from hf_pept.galore.integration import galore_param_groups
from hf_pept.models import build_llama

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _optimizer(model, batched, proj_type="std", weight_decay=0.1, gap=3, rank=8):
    config = GaLoreConfig(rank=rank, update_proj_gap=gap, proj_type=proj_type)
    groups = galore_param_groups(model, TARGETS, config, weight_decay)
    return GaLoreAdamW(groups, lr=1e-2, weight_decay=weight_decay, batched=batched)


def _twins(dtype, **kwargs):
    """A model + per-weight optimizer after two steps, and a copy of both whose optimizer steps batched."""
    model = build_llama("tiny", 128, seed=0, num_hidden_layers=3).to(dtype)
    reference = _optimizer(model, False, **kwargs)
    for _ in range(2):
        ids = torch.randint(0, 128, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        reference.step()
        reference.zero_grad()
    twin = copy.deepcopy(model)
    batched = _optimizer(twin, True, **kwargs)
    batched.load_state_dict(copy.deepcopy(reference.state_dict()))  # its own tensors, not the reference's
    return (model, reference), (twin, batched)


def _step_both_with_the_same_gradients(pairs, steps, check):
    (model, reference), (twin, batched) = pairs
    for _ in range(steps):
        ids = torch.randint(0, 128, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        for p, q in zip(model.parameters(), twin.parameters()):
            q.grad = p.grad.clone()
        reference.step()
        batched.step()
        reference.zero_grad()
        batched.zero_grad()
        for (name, a), b in zip(twin.named_parameters(), model.parameters()):
            check(name, a, b)


@pytest.mark.parametrize("proj_type", ["std", "reverse_std"])  # both sides, across two projector refreshes
def test_batched_steps_follow_the_per_weight_reference_in_fp32(proj_type):
    def check(name, a, b):
        assert torch.allclose(a, b, rtol=1e-6, atol=1e-8), (name, (a - b).abs().max())

    pairs = _twins(torch.float32, proj_type=proj_type)
    _step_both_with_the_same_gradients(pairs, 6, check)
    (_, reference), (_, batched) = pairs
    for p_a, p_b in zip(batched.state, reference.state):
        for key, value in reference.state[p_b].items():
            got = batched.state[p_a][key]
            assert torch.allclose(got, value, rtol=1e-5, atol=1e-9) if torch.is_tensor(value) else got == value, key


def test_batched_steps_follow_the_reference_in_bf16():
    def check(name, a, b):
        assert torch.allclose(a.float(), b.float(), rtol=1e-2, atol=1e-3), (name, (a - b).abs().max())

    _step_both_with_the_same_gradients(_twins(torch.bfloat16), 4, check)


def _top_level_ops_of_one_ordinary_step(layers: int, batched: bool) -> int:
    model = build_llama("tiny", 128, seed=0, num_hidden_layers=layers)
    optimizer = _optimizer(model, batched, gap=100)
    ids = torch.randint(0, 128, (2, 16))
    for _ in range(2):  # state exists, and step 2 refreshes no projector
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    model(input_ids=ids, labels=ids).loss.backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        optimizer.step()
    return sum(1 for event in profile.events() if event.name.startswith("aten::") and not _inside_an_op(event))


def _inside_an_op(event) -> bool:
    """Whether an aten op runs inside another aten op (then the outer one is what was dispatched)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("aten::"):
            return True
        parent = parent.cpu_parent
    return False


def test_the_ops_an_ordinary_step_dispatches_do_not_grow_with_the_number_of_same_shaped_weights():
    """CPU proxy of the GPU's launch count: 8 blocks dispatch at most 1.5× the top-level ops of 2 blocks."""
    two, eight = (_top_level_ops_of_one_ordinary_step(n, batched=True) for n in (2, 8))
    per_weight_two, per_weight_eight = (_top_level_ops_of_one_ordinary_step(n, batched=False) for n in (2, 8))
    assert eight <= 1.5 * two, (two, eight)
    assert per_weight_eight > 3 * per_weight_two  # the reference grows with the weights: the count measures that
    print(f"top-level ops per ordinary step: batched {two} (2 blocks) / {eight} (8 blocks); per-weight "
          f"{per_weight_two} / {per_weight_eight}")  # fmt: skip


def test_weights_due_for_a_refresh_or_with_fira_take_the_per_weight_path():
    model = build_llama("tiny", 128, seed=0)
    optimizer = _optimizer(model, batched=True, gap=2)
    group = optimizer.param_groups[0]
    ids = torch.randint(0, 128, (2, 16))
    model(input_ids=ids, labels=ids).loss.backward()
    weight = group["params"][0]
    assert optimizer._batch_key(group, weight) is None  # no state yet: the first step computes P
    optimizer.step()
    assert optimizer._batch_key(group, weight) is not None  # step 1: ordinary
    optimizer.step()
    assert optimizer._batch_key(group, weight) is None  # step 2: a refresh is due
    group["fira"] = True
    optimizer.state[weight]["step"] = 3
    assert optimizer._batch_key(group, weight) is None
    group["fira"] = False
    assert optimizer._batch_key(group, weight) is not None
    optimizer.batched = None  # the default: batched on CUDA only (on CPU the per-weight GEMMs measured faster)
    assert optimizer._batch_key(group, weight) is None
