"""GaLore optimizer numerics against independent references: the paper's update written out, torch.optim.AdamW,
transformers' Adafactor, the exact SVD and (where installed) galore-torch."""

import io
import warnings

import pytest
import torch
from transformers.optimization import Adafactor

from hf_pept import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit
from hf_pept.galore import adamw8bit
from hf_pept.galore.config import GaLoreConfig
from hf_pept.galore.projector import compute_projectors


def _top_left_singular(matrix, rank):
    return torch.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


def _subspace_distance(a, b):
    """Spectral norm of the difference of the orthogonal projections onto span(a) and span(b) (0 = same)."""
    return torch.linalg.matrix_norm(a @ a.t() - b @ b.t(), ord=2).item()


@pytest.mark.parametrize("shape,side", [((12, 30), "left"), ((30, 12), "right")])
def test_two_steps_equal_galore_update_written_out(shape, side):
    """GaLore Alg. 1: R = PᵀG (left) or GQ (right), Adam on R, W ← W − η(α·P·N + λ·W); P from step-1 gradient."""
    rank, lr, scale, decay, beta1, beta2, eps = 4, 0.05, 0.25, 0.1, 0.9, 0.99, 1e-8
    weight = torch.nn.Parameter(torch.randn(shape))
    grads = [torch.randn(shape), torch.randn(shape)]
    group = {"params": [weight], "rank": rank, "update_proj_gap": 10, "scale": scale}
    opt = GaLoreAdamW([group], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=decay)

    expected = weight.detach().clone()
    u, _, vh = torch.linalg.svd(grads[0], full_matrices=False)
    P, Q = u[:, :rank], vh[:rank].t()
    M = V = 0
    for t, G in enumerate(grads, start=1):
        R = P.t() @ G if side == "left" else G @ Q
        M = beta1 * M + (1 - beta1) * R
        V = beta2 * V + (1 - beta2) * R * R
        N = (M / (1 - beta1**t)) / ((V / (1 - beta2**t)).sqrt() + eps)
        back = P @ N if side == "left" else N @ Q.t()
        expected = expected - lr * (scale * back + decay * expected)

        weight.grad = G.clone()
        opt.step()
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    assert opt.state[weight]["exp_avg"].shape == ((rank, shape[1]) if side == "left" else (shape[0], rank))


def test_full_projection_uses_both_sides():
    """proj_type='full': R = PᵀGQ (r×r), W ← W − η α P N Qᵀ."""
    rank, lr, scale = 3, 0.1, 0.5
    weight = torch.nn.Parameter(torch.randn(10, 14))
    G = torch.randn(10, 14)
    opt = GaLoreAdamW([{"params": [weight], "rank": rank, "scale": scale, "proj_type": "full"}], lr=lr)
    u, _, vh = torch.linalg.svd(G, full_matrices=False)
    P, Q = u[:, :rank], vh[:rank].t()
    R = P.t() @ G @ Q
    N = R / (R.abs() + 1e-8)  # first Adam step: M̂ = R, V̂ = R²
    expected = weight.detach() - lr * scale * P @ N @ Q.t()
    weight.grad = G
    opt.step()
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)
    assert opt.state[weight]["exp_avg"].shape == (rank, rank)


def test_full_rank_params_follow_torch_adamw_exactly():
    torch.manual_seed(1)
    shapes = [(7,), (5, 6), (3, 40), (2, 3), (8, 12)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kwargs = {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}
    # the (3, 40) and (2, 3) matrices sit in a projected group but are too small for rank 4: full-rank there too
    # (the (8, 12) one is projected, so it is left out of the comparison)
    with pytest.warns(UserWarning, match="train full-rank"):
        opt = GaLoreAdamW([{"params": ours[:2]}, {"params": ours[2:], "rank": 4, "weight_decay": 0.0}], **kwargs)
    ref_opt = torch.optim.AdamW(
        [{"params": ref[:2]}, {"params": ref[2:], "weight_decay": 0.0}], foreach=True, **kwargs
    )
    _step_both_with_the_same_gradients(opt, ours, ref_opt, ref, steps=5)
    assert "projector" in opt.state[ours[-1]]
    for a, b in zip(ours[:-1], ref[:-1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_projector_is_top_r_singular_subspace():
    G = torch.randn(20, 50)
    (P,) = compute_projectors(G, 5, "left")
    (Q,) = compute_projectors(G, 5, "right")
    u, _, vh = torch.linalg.svd(G.double(), full_matrices=False)
    assert _subspace_distance(P.double(), u[:, :5]) < 1e-5
    assert _subspace_distance(Q.double(), vh[:5].t()) < 1e-5
    torch.testing.assert_close(P.t() @ P, torch.eye(5), atol=1e-5, rtol=0)


def test_randomized_projector_spans_nearly_the_svd_subspace():
    m, n, rank = 64, 96, 8
    low_rank = torch.randn(m, rank) @ torch.diag(torch.linspace(10, 3, rank)) @ torch.randn(rank, n)
    G = low_rank + 1e-3 * torch.randn(m, n)
    exact = _top_left_singular(G, rank)
    (P,) = compute_projectors(G, rank, "left", proj_method="randomized", oversampling=8, power_iters=2, step=3)
    (Q,) = compute_projectors(G, rank, "right", proj_method="randomized", oversampling=8, power_iters=2, step=3)
    assert _subspace_distance(P, exact) < 1e-3
    assert _subspace_distance(Q, _top_left_singular(G.t(), rank)) < 1e-3
    # deterministic per (seed, param, step), different for another step
    (again,) = compute_projectors(G, rank, "left", proj_method="randomized", step=3)
    torch.testing.assert_close(P, again, rtol=0, atol=0)


@pytest.mark.parametrize("method", ["svd", "randomized"])
def test_state_dict_roundtrip_resumes_exactly_with_refresh_right_after_save(method):
    def make():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Tanh(), torch.nn.Linear(24, 4))
        groups = [
            {"params": [model[0].weight, model[2].weight], "rank": 3, "update_proj_gap": 3, "proj_method": method},
            {"params": [model[0].bias, model[2].bias]},
        ]
        return model, GaLoreAdamW(groups, lr=0.01, weight_decay=0.01)

    data = [(torch.randn(8, 16), torch.randn(8, 4)) for _ in range(7)]

    def train(model, opt, batches):
        losses = []
        for x, y in batches:
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
        return losses

    model, opt = make()
    reference = train(model, opt, data)

    model, opt = make()
    train(model, opt, data[:3])  # the 4th step (state step 3) refreshes the projector
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    model, opt = make()
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["opt"])
    assert train(model, opt, data[3:]) == reference[3:]


def test_projector_refresh_events():
    w = torch.nn.Parameter(torch.randn(10, 20))
    opt = GaLoreAdamW([{"params": [w], "rank": 2, "update_proj_gap": 2}])
    steps = []
    for _ in range(5):
        w.grad = torch.randn_like(w)
        opt.step()
        steps += [e["step"] for e in opt.pop_events()]
    assert steps == [0, 2, 4]
    assert opt.pop_events() == []


def test_small_matrices_train_full_rank_with_one_warning():
    small = [
        torch.nn.Parameter(torch.randn(8, 40)),
        torch.nn.Parameter(torch.randn(4, 4)),
        torch.nn.Parameter(torch.randn(9)),
    ]
    projected = torch.nn.Parameter(torch.randn(12, 40))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt = GaLoreAdamW([{"params": [*small, projected], "rank": 8}])
    messages = [str(w.message) for w in caught if "full-rank" in str(w.message)]
    assert len(messages) == 1 and "(4, 4), (8, 40), (9,)" in messages[0]
    for p in [*small, projected]:
        p.grad = torch.randn_like(p)
    opt.step()
    assert all("projector" not in opt.state[p] and opt.state[p]["exp_avg"].shape == p.shape for p in small)
    assert opt.state[projected]["projector"].shape == (12, 8)


@pytest.mark.parametrize(
    "bad,match",
    [
        ({"rnak": "4"}, "rnak"),
        ({"proj_type": "diagonal"}, "proj_type"),
        ({"proj_method": "qr"}, "proj_method"),
        ({"rank": "four"}, "rank"),
        ({"rank": "0"}, "rank"),
        ({"scale": "-1"}, "scale"),
        ({"update_proj_gap": "0"}, "update_proj_gap"),
    ],
)
def test_bad_knobs_are_value_errors_naming_the_knob(bad, match):
    with pytest.raises(ValueError, match=match):
        GaLoreConfig.from_strings(bad)


def test_bad_group_value_is_rejected_by_the_optimizer():
    with pytest.raises(ValueError, match="proj_type"):
        GaLoreAdamW([{"params": [torch.nn.Parameter(torch.randn(8, 8))], "rank": 2, "proj_type": "sideways"}])


def test_adafactor_full_rank_matches_transformers_adafactor():
    torch.manual_seed(2)
    shapes = [(6, 9), (5,)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    kwargs = {"lr": 0.01, "beta1": 0.9, "weight_decay": 0.05, "scale_parameter": False, "relative_step": False}
    opt, ref_opt = GaLoreAdafactor(ours, **kwargs), Adafactor(ref, **kwargs)
    _step_both_with_the_same_gradients(opt, ours, ref_opt, ref, steps=4)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_adafactor_projected_step_is_adafactor_on_R():
    """W ← (1 − ηλ)W − α·P·Û where Û is transformers' Adafactor update of a stand-in parameter with gradient R."""
    rank, lr, scale, decay = 3, 0.02, 0.25, 0.1
    weight = torch.nn.Parameter(torch.randn(10, 16))
    opt = GaLoreAdafactor([{"params": [weight], "rank": rank, "scale": scale}], lr=lr, weight_decay=decay)
    stand_in = torch.nn.Parameter(torch.zeros(rank, 16))
    ref = Adafactor([stand_in], lr=lr, scale_parameter=False, relative_step=False)
    expected = weight.detach().clone()
    grads = [torch.randn(10, 16), torch.randn(10, 16)]
    P = _top_left_singular(grads[0], rank)
    for G in grads:
        before = stand_in.detach().clone()
        stand_in.grad = P.t() @ G
        ref.step()
        update = before - stand_in.detach()
        expected = (1 - lr * decay) * expected - scale * P @ update
        weight.grad = G
        opt.step()
    torch.testing.assert_close(weight.detach(), expected, rtol=1e-5, atol=1e-6)


def test_8bit_state_is_quantized_and_tracks_fp32():
    pytest.importorskip("bitsandbytes")
    torch.manual_seed(3)
    w8 = torch.nn.Parameter(torch.randn(32, 64))
    w32 = torch.nn.Parameter(w8.detach().clone())
    group = {"rank": 8, "update_proj_gap": 50}
    opt8 = GaLoreAdamW8bit([{"params": [w8], **group}], lr=1e-3)
    opt32 = GaLoreAdamW([{"params": [w32], **group}], lr=1e-3)
    start = w8.detach().clone()
    for _ in range(5):
        g = torch.randn(32, 64)
        w8.grad, w32.grad = g.clone(), g.clone()
        opt8.step()
        opt32.step()
    assert opt8.state[w8]["exp_avg_q"].dtype == torch.uint8
    assert opt8.state[w8]["exp_avg_sq_q"].dtype == torch.uint8
    moved8, moved32 = w8.detach() - start, w32.detach() - start
    assert torch.linalg.norm(moved8 - moved32) < 0.05 * torch.linalg.norm(moved32)
    # the 8-bit state survives a weights-only round trip with its dtypes
    buffer = io.BytesIO()
    torch.save(opt8.state_dict(), buffer)
    buffer.seek(0)
    fresh = GaLoreAdamW8bit([{"params": [w8], **group}], lr=1e-3)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    assert fresh.state[w8]["exp_avg_q"].dtype == torch.uint8
    torch.testing.assert_close(fresh.state[w8]["exp_avg_absmax"], opt8.state[w8]["exp_avg_absmax"], rtol=0, atol=0)


def test_8bit_without_bitsandbytes_warns_once_and_keeps_fp32_state(monkeypatch):
    monkeypatch.setattr(adamw8bit, "bitsandbytes_available", lambda: False)
    w = torch.nn.Parameter(torch.randn(16, 32))
    with pytest.warns(UserWarning, match="bitsandbytes is not installed") as record:
        opt = GaLoreAdamW8bit([{"params": [w], "rank": 4}])
    assert len([r for r in record if "bitsandbytes" in str(r.message)]) == 1
    w.grad = torch.randn_like(w)
    opt.step()
    assert opt.state[w]["exp_avg"].dtype == torch.float32


def test_step_matches_galore_torch_up_to_eps_placement():
    """galore-torch adds ε before bias correction (ε_eff = ε·sqrt(1 − β₂ᵗ)) and applies no weight decay through
    the Trainer; with λ = 0 and a negligible ε the two implementations take the same steps (incl. a refresh)."""
    galore_torch = pytest.importorskip("galore_torch")
    torch.manual_seed(4)
    for shape in [(12, 30), (30, 12)]:
        ours = torch.nn.Parameter(torch.randn(shape))
        theirs = torch.nn.Parameter(ours.detach().clone())
        group = {"rank": 4, "update_proj_gap": 2, "scale": 0.25, "proj_type": "std"}
        opt = GaLoreAdamW([{"params": [ours], **group}], lr=0.01, eps=1e-12)
        ref = galore_torch.GaLoreAdamW([{"params": [theirs], **group}], lr=0.01, eps=1e-12, weight_decay=0.0)
        for _ in range(5):
            g = torch.randn(shape)
            ours.grad, theirs.grad = g.clone(), g.clone()
            opt.step()
            ref.step()
        torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)


def _step_both_with_the_same_gradients(opt, ours, ref_opt, ref, steps):
    """Give both optimizers' parameters the same random gradients and step both, ``steps`` times."""
    for _ in range(steps):
        for a, b in zip(ours, ref):
            a.grad = torch.randn_like(a)
            b.grad = a.grad.clone()
        opt.step()
        ref_opt.step()
