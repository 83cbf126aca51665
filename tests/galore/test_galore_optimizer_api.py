"""The GaLore optimizer as a plain torch.optim.Optimizer: param groups added later, the public per-parameter step,
the error when nothing would be projected, and no transformers import."""

import io
import subprocess
import sys
import textwrap
import warnings

import pytest
import torch

from hf_pept import GaLoreAdafactor, GaLoreAdamW


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Linear(24, 12), torch.nn.Linear(12, 8))


def _groups(model):
    """Two projected groups (exact SVD; randomized, whose sketch is seeded by the parameter's index) and the biases."""
    svd = {"params": [model[0].weight], "rank": 4, "update_proj_gap": 2}
    randomized = {"params": [model[1].weight, model[2].weight], "rank": 3, "proj_method": "randomized"}
    randomized["update_proj_gap"] = 2
    biases = {"params": [model[0].bias, model[1].bias, model[2].bias], "weight_decay": 0.0}
    return svd, randomized, biases


def _train(model, optimizer, steps=5, seed=1):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        inputs = torch.randn(6, 16, generator=generator)
        model(inputs).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("layerwise", [False, True])
def test_a_projected_group_added_later_trains_as_if_given_at_construction(layerwise):
    reference_model = _model()
    reference = _train(reference_model, GaLoreAdamW(list(_groups(reference_model)), lr=1e-2, weight_decay=0.1))

    model = _model()
    svd, randomized, biases = _groups(model)
    optimizer = GaLoreAdamW([svd], lr=1e-2, weight_decay=0.1, layerwise=layerwise)
    optimizer.add_param_group(randomized)
    optimizer.add_param_group(biases)
    after = _train(model, optimizer)

    assert all("projector" in optimizer.state[p] for p in randomized["params"])
    for ours, theirs in zip(after, reference):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def _added_later(model, layerwise=False):
    svd, randomized, biases = _groups(model)
    optimizer = GaLoreAdamW([svd, biases], lr=1e-2, layerwise=layerwise)
    optimizer.add_param_group(randomized)
    return optimizer


@pytest.mark.parametrize("layerwise", [False, True])
def test_an_optimizer_with_an_added_group_resumes_exactly_from_its_state_dict(layerwise):
    model = _model()
    optimizer = _added_later(model, layerwise)
    _train(model, optimizer, steps=3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = _model(seed=1)
    resumed_model.load_state_dict(saved["model"])
    resumed = _added_later(resumed_model, layerwise)
    resumed.load_state_dict(saved["optimizer"])
    # step 4 refreshes the projectors (update_proj_gap=2), with the sketch seeded by each parameter's index
    for ours, theirs in zip(_train(resumed_model, resumed, seed=2), _train(model, optimizer, seed=2)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


@pytest.mark.parametrize("optimizer_class", [GaLoreAdamW, GaLoreAdafactor])
def test_step_parameter_for_every_parameter_equals_one_step(optimizer_class):
    results, events = [], []
    for per_parameter in (False, True):
        model = _model()
        optimizer = optimizer_class(list(_groups(model)), lr=1e-2)
        generator = torch.Generator().manual_seed(3)
        for _ in range(3):
            model(torch.randn(6, 16, generator=generator)).square().mean().backward()
            if per_parameter:
                for p in reversed(list(model.parameters())):  # backward order, as the layer-wise hooks see them
                    optimizer.step_parameter(p)
                optimizer.finish_parameter_steps()
            else:
                optimizer.step()
            optimizer.zero_grad()
        results.append([p.detach().clone() for p in model.parameters()])
        events.append(optimizer.pop_events())
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert events[0] == events[1]
    assert [(e["step"], e["num_params"]) for e in events[0]] == [(0, 3), (2, 3)]


def test_step_parameter_refuses_a_tensor_it_does_not_hold():
    optimizer = GaLoreAdamW([{"params": [torch.nn.Parameter(torch.randn(8, 8))], "rank": 2}])
    with pytest.raises(ValueError, match=r"shape \(3, 3\) that is in no param group"):
        optimizer.step_parameter(torch.nn.Parameter(torch.randn(3, 3)))


def test_a_projected_optimizer_that_projects_nothing_is_an_error_with_a_rank_that_works():
    # the weights of a 32-wide model at the default rank 128: no side exceeds the rank
    weights = [torch.nn.Parameter(torch.randn(s)) for s in [(32, 32), (64, 32), (32, 64), (32, 32)]]
    norm = torch.nn.Parameter(torch.ones(32))
    with pytest.raises(ValueError) as error:
        GaLoreAdamW([{"params": [*weights, norm], "rank": 128}, {"params": [torch.nn.Parameter(torch.ones(3))]}])
    message = str(error.value)
    assert "rank=128" in message and "(32,), (32, 32), (32, 64), (64, 32)" in message
    assert "e.g. rank=16" in message
    # and the suggested rank does project them all, without a warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = GaLoreAdamW([{"params": weights, "rank": 16}])
    assert all(optimizer.is_projected(w, optimizer.param_groups[0]) for w in weights)


def test_projected_groups_without_any_matrix_say_so():
    with pytest.raises(ValueError, match="None of them is a matrix GaLore can project"):
        GaLoreAdafactor([{"params": [torch.nn.Parameter(torch.ones(64))], "rank": 8}])


def test_an_all_small_group_added_later_warns_and_trains_full_rank():
    big = torch.nn.Parameter(torch.randn(16, 16))
    small = torch.nn.Parameter(torch.randn(4, 16))
    optimizer = GaLoreAdamW([{"params": [big], "rank": 8}])
    with pytest.warns(UserWarning, match=r"\(4, 16\).*train full-rank"):
        optimizer.add_param_group({"params": [small], "rank": 8})
    for p in (big, small):
        p.grad = torch.randn_like(p)
    optimizer.step()
    assert "projector" in optimizer.state[big] and "projector" not in optimizer.state[small]


PLAIN_LOOP_WITHOUT_HF_PEPT_INIT = textwrap.dedent(
    """
    import importlib.util
    import sys

    # hf_pept/__init__.py registers with transformers and peft by design. Put the package object in place without
    # running it, so that only the GaLore modules' own imports run below.
    sys.modules["hf_pept"] = importlib.util.module_from_spec(importlib.util.find_spec("hf_pept"))

    import torch

    from hf_pept.galore import GaLoreAdafactor, GaLoreAdamW, GaLoreAdamW8bit

    for optimizer_class in (GaLoreAdamW, GaLoreAdamW8bit, GaLoreAdafactor):
        for layerwise in (False, True):
            model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.Linear(24, 8))
            groups = [{"params": [model[0].weight, model[1].weight], "rank": 4}, {"params": [model[0].bias]}]
            optimizer = optimizer_class(groups, lr=1e-2, layerwise=layerwise)
            model(torch.randn(5, 16)).square().mean().backward()
            optimizer.step()
    print(sorted(name for name in sys.modules if name.split(".")[0] == "transformers"))
    """
)


def test_the_optimizers_run_a_plain_torch_loop_without_importing_transformers(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_LOOP_WITHOUT_HF_PEPT_INIT],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout
