"""The SST layer against references written here: W = Σᵢ Σᵢ·Uᵢ·Vᵢᵀ, the gradients of Zhao et al. 2025 §4.2 computed
from ∂L/∂W, the sampling distribution's exact probabilities, and the column operations (swap, re-SVD, projection)."""

import itertools

import pytest
import torch
from sst_helpers import (
    TOKENS,
    full_factors_reference,
    saved_activation_bytes,
    sst_layers,
    sst_model,
    tiny_llama,
    weight_reference,
)
from torch import nn

from hf_pept.sst import Linear, sample_active, sampling_probabilities


def _layer(out_features=10, in_features=7, r=3, enhanced=True, seed=0):
    torch.manual_seed(seed)
    base = nn.Linear(in_features, out_features, bias=True)
    original = base.weight.detach().clone()
    return Linear(base, "default", r, enhanced), original


def test_wrapping_keeps_the_output_and_removes_the_weight():
    reference = tiny_llama()
    originals = {n: m.weight.detach().clone() for n, m in reference.named_modules() if isinstance(m, nn.Linear)}
    with torch.no_grad():
        expected = reference(input_ids=TOKENS).logits
    model = sst_model()  # the same seed: the same random weights
    layers = dict(model.base_model.sst_layers())
    assert len(layers) == 14 and not any("lm_head" in name for name in layers)
    for name, layer in layers.items():
        torch.testing.assert_close(weight_reference(layer), originals[name].double(), rtol=0, atol=1e-5)
        assert layer.get_base_layer().weight.numel() == 0  # W itself is gone: U, Σ, V are the weights
        u, sigma, v = full_factors_reference(layer)
        eye = torch.eye(sigma.numel(), dtype=torch.float64)
        torch.testing.assert_close(u.T @ u, eye, atol=1e-5, rtol=0)
        torch.testing.assert_close(v.T @ v, eye, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=TOKENS).logits, expected, rtol=1e-4, atol=1e-5)


def test_merge_and_unload_gives_plain_linears_with_w_equal_u_sigma_vt():
    model = sst_model()
    with torch.no_grad():  # move away from the initial SVD: arbitrary Σ, non-orthogonal columns
        for layer in sst_layers(model):
            layer.sst_sigma["default"].uniform_(0, 2)
            layer.sst_U_active["default"].add_(0.3 * torch.randn_like(layer.sst_U_active["default"]))
        expected_logits = model(input_ids=TOKENS).logits
    expected = {name: weight_reference(layer) for name, layer in model.base_model.sst_layers()}
    merged = model.merge_and_unload()
    assert not any("sst" in name for name, _ in merged.named_modules())
    linears = {name: m for name, m in merged.named_modules() if isinstance(m, nn.Linear) and "lm_head" not in name}
    assert set(linears) == set(expected)
    for name, weight in expected.items():
        assert type(linears[name]) is nn.Linear
        torch.testing.assert_close(linears[name].weight.double(), weight, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=TOKENS).logits, expected_logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("enhanced", [True, False])
def test_gradients_follow_the_paper_formulas(enhanced):
    layer, _ = _layer(enhanced=enhanced)
    x = torch.randn(5, 4, 7, requires_grad=True)
    target = torch.randn(5, 4, 10)
    # Reference: the same W as a dense leaf; G = ∂L/∂W by plain autograd.
    w = weight_reference(layer).float().requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    bias = layer.get_base_layer().bias.detach()
    ((x_ref @ w.T + bias - target) ** 2).sum().backward()
    g = w.grad.double()
    ((layer(x) - target) ** 2).sum().backward()

    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    u, sigma, v = full_factors_reference(layer)
    # ∂L/∂Σᵢ = Uᵢᵀ G Vᵢ for all k triplets, active or frozen
    close = {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(layer.sst_sigma["default"].grad.double(), torch.einsum("mi,mn,ni->i", u, g, v), **close)
    active = layer.sst_active_index["default"]
    scale = 1.0 if enhanced else sigma[active]
    # enhanced: ∂L/∂Uᵢ = G Vᵢ, ∂L/∂Vᵢ = Gᵀ Uᵢ (no Σᵢ); exact: times Σᵢ
    torch.testing.assert_close(layer.sst_U_active["default"].grad.double(), g @ v[:, active] * scale, **close)
    torch.testing.assert_close(layer.sst_V_active["default"].grad.double(), g.T @ u[:, active] * scale, **close)
    assert layer.sst_U_frozen["default"].grad is None and not layer.sst_U_frozen["default"].requires_grad


def test_exact_gradient_mode_equals_autograd_of_the_product():
    layer, _ = _layer(enhanced=False)
    x = torch.randn(6, 7)
    sigma, u_f, v_f, u_a, v_a, frozen, active = layer.partitions("default")
    leaves = [t.detach().clone().requires_grad_(True) for t in (sigma, u_a, v_a)]
    s, ua, va = leaves
    w = (ua * s[active]) @ va.T + (u_f * s[frozen]) @ v_f.T
    (x @ w.T + layer.get_base_layer().bias.detach()).square().sum().backward()
    layer(x).square().sum().backward()
    for leaf, param in zip(leaves, (sigma, u_a, v_a)):
        torch.testing.assert_close(param.grad, leaf.grad, rtol=1e-5, atol=1e-6)


def test_cpu_autocast_runs_in_bf16_and_gives_fp32_parameter_gradients():
    layer, _ = _layer()
    x = torch.randn(4, 7)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert all(
        p.grad.dtype == torch.float32 for p in layer.partitions("default")[:1] + layer.partitions("default")[3:5]
    )


def test_sampling_probabilities_are_the_papers_mixture():
    sigma = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0])
    expected = 0.5 * (torch.full((5,), 1 / 5) + sigma / 8)
    torch.testing.assert_close(sampling_probabilities(sigma).float(), expected)
    torch.testing.assert_close(sampling_probabilities(sigma, "uniform").float(), torch.full((5,), 0.2))
    torch.testing.assert_close(sampling_probabilities(torch.zeros(4)).float(), torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="sampling"):
        sampling_probabilities(sigma, "top")


# χ² 99.9 % quantiles for 4 and 9 degrees of freedom
CHI2_999 = {4: 18.467, 9: 27.877}


def _chi_square(counts: dict, expected: dict, draws: int) -> float:
    return sum((counts.get(key, 0) - draws * p) ** 2 / (draws * p) for key, p in expected.items())


def test_single_draws_follow_p_and_pairs_follow_successive_sampling_without_replacement():
    sigma = torch.tensor([4.0, 2.0, 1.0, 1.0, 0.0])
    p = sampling_probabilities(sigma).tolist()
    generator = torch.Generator().manual_seed(0)
    draws = 6000
    singles: dict = {}
    for _ in range(draws):
        i = int(sample_active(sigma, 1, "mixed", generator))
        singles[i] = singles.get(i, 0) + 1
    assert _chi_square(singles, dict(enumerate(p)), draws) < CHI2_999[4]
    # Without replacement: P({i, j}) = pᵢ·pⱼ/(1 − pᵢ) + pⱼ·pᵢ/(1 − pⱼ)
    pairs_expected = {
        (i, j): p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j]) for i, j in itertools.combinations(range(5), 2)
    }
    pairs: dict = {}
    for _ in range(draws):
        pair = tuple(sample_active(sigma, 2, "mixed", generator).tolist())
        assert pair[0] < pair[1]  # distinct, sorted
        pairs[pair] = pairs.get(pair, 0) + 1
    assert _chi_square(pairs, pairs_expected, draws) < CHI2_999[9]
    # The magnitude half matters: with-replacement or uniform pair frequencies are rejected.
    uniform = {pair: 0.1 for pair in pairs_expected}
    assert _chi_square(pairs, uniform, draws) > CHI2_999[9]


def test_draws_depend_on_seed_and_step_only():
    model = sst_model(sample_seed=3)
    first = model.base_model.draw_active(step=6)
    torch.manual_seed(1234)  # the global RNG plays no part
    assert all(torch.equal(a, b) for a, b in zip(first, model.base_model.draw_active(step=6)))
    other = model.base_model.draw_active(step=9)
    assert any(not torch.equal(a, b) for a, b in zip(first, other))
    assert all(d.numel() == 4 and d.unique().numel() == 4 for d in first)


def test_swap_moves_only_the_changed_columns_and_keeps_w():
    layer, _ = _layer(out_features=12, in_features=9, r=4)
    before_w = weight_reference(layer)
    old_active = layer.sst_active_index["default"].clone()
    old_slots = {int(i): layer.sst_U_active["default"][:, s].clone() for s, i in enumerate(old_active.tolist())}
    staying = old_active[:2]
    new = torch.cat([staying, layer.sst_frozen_index["default"][:2]])
    u_param = layer.sst_U_active["default"]
    assert layer.swap_in("default", new) == 2
    assert layer.sst_U_active["default"] is u_param  # same Parameter, new contents
    active = layer.sst_active_index["default"]
    assert sorted(active.tolist()) == sorted(new.tolist())
    for slot, index in enumerate(active.tolist()):
        if index in staying.tolist():
            assert slot == old_active.tolist().index(index)  # a staying vector keeps its slot
            assert torch.equal(layer.sst_U_active["default"][:, slot], old_slots[index])
    assert torch.equal(weight_reference(layer), before_w)
    assert sorted(active.tolist() + layer.sst_frozen_index["default"].tolist()) == list(range(9))
    with pytest.raises(ValueError, match="distinct"):
        layer.swap_in("default", torch.tensor([0, 0, 1, 2]))


def test_resvd_restores_orthonormal_factors_and_keeps_w():
    layer, _ = _layer(out_features=12, in_features=9, r=4)
    with torch.no_grad():
        layer.sst_U_active["default"].add_(0.2 * torch.randn_like(layer.sst_U_active["default"]))
        layer.sst_sigma["default"].uniform_(0.1, 1)
    before = weight_reference(layer)
    error = layer.resvd("default")
    assert error > 0.01
    u, sigma, v = full_factors_reference(layer)
    eye = torch.eye(9, dtype=torch.float64)
    torch.testing.assert_close(u.T @ u, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(v.T @ v, eye, atol=1e-5, rtol=0)
    assert torch.all(sigma[:-1] >= sigma[1:])  # index i names the i-th largest triplet
    torch.testing.assert_close(weight_reference(layer), before, atol=1e-5, rtol=0)


def test_projection_clamps_sigma_and_normalises_active_columns():
    layer, _ = _layer()
    with torch.no_grad():
        layer.sst_sigma["default"][0] = -0.5
        layer.sst_U_active["default"].mul_(3)
        layer.sst_V_active["default"].mul_(0.1)
    frozen = layer.sst_U_frozen["default"].clone()
    layer.project("default")
    assert layer.sst_sigma["default"].min() >= 0 and layer.sst_sigma["default"][0] == 0
    for name in ("sst_U_active", "sst_V_active"):
        norms = getattr(layer, name)["default"].norm(dim=0)
        torch.testing.assert_close(norms, torch.ones_like(norms))
    assert torch.equal(layer.sst_U_frozen["default"], frozen)


def test_disabled_adapter_says_there_is_no_base_weight():
    model = sst_model()
    with pytest.raises(RuntimeError, match="no base weight"), model.disable_adapter(), torch.no_grad():
        model(input_ids=TOKENS)


def test_saved_activations_stay_within_the_plain_models_estimate():
    """The autograd function keeps only each layer's input (W is rebuilt in backward), so SST's activations are a
    plain LLaMA's: hf_pept.memory counts them with the same formula."""
    from hf_pept import memory, run_args
    from hf_pept.models import build_llama
    from hf_pept.runner import apply_method

    model = build_llama("tiny", 512, max_position_embeddings=64, seed=0)
    model = apply_method(model, run_args.prepare(run_args.RunArguments(method="sst", model="tiny")))
    measured = saved_activation_bytes(model, torch.randint(0, 512, (4, 64)))
    estimated = memory.estimate("sst", model="tiny", vocab_size=512, seq_len=64, batch_size=4).activations
    assert abs(estimated - measured) / measured < 0.2, (estimated, measured)
