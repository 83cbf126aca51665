"""The app's form of the real `hf-pept train`: sections, defaults and checks come from hf_pept.run_args and the
method configs; a command written by the form is parsed back by the CLI's own parser to the same values."""

from __future__ import annotations

import dataclasses

import pytest

from hf_pept import run_args
from hf_pept.app import form
from hf_pept.app.backend import Backend
from hf_pept.app.schema import load_schema

SCHEMA = load_schema()


@pytest.fixture
def backend(tmp_path):
    return Backend(SCHEMA, tmp_path)


def form_values(**changes):
    return {**form.values_to_form(SCHEMA.specs, {}), **changes}


def test_sections_and_methods_are_the_cli_ones():
    assert SCHEMA.methods == run_args.METHODS
    assert [(s.title, s.config_class, s.methods) for s in SCHEMA.method_sections] == run_args.method_sections()
    names = {spec.name for spec in SCHEMA.run.specs}
    assert "output_dir" not in names and "resume_from_checkpoint" not in names  # the app picks these


def test_untouched_form_is_the_cli_default(backend):
    state = backend.form_state(form_values())
    assert state.errors == {} and state.command == "hf-pept train"
    assert run_args.parse_train_args([]) == run_args.parse_train_args(state.argv)


@pytest.mark.parametrize(
    "changes",
    [
        {
            "method": "relora",
            "rank": "16",
            "relora_steps": "50",
            "restart_warmup_steps": "5",
            "prune_ratio": "0.5",
            "warm_start_steps": "20",
            "lora_alpha": "64",
        },
        {
            "method": "galore-layerwise",
            "galore_scale": "0.5",
            "update_proj_gap": "20",
            "proj_type": "left",
            "target_modules": "q_proj v_proj",
            "learning_rate": "0.005",
            "gradient_checkpointing": True,
        },
        {"method": "full", "model": "tiny", "max_steps": "7", "precision": "fp32", "logging_steps": "1"},
        {"method": "galore-8bit", "fira": True, "fira_limiter": "1.05"},
    ],
)
def test_command_parses_back_through_the_cli_parser_to_the_form_values(backend, changes):
    state = backend.form_state(form_values(**changes))
    assert state.errors == {}
    parsed = run_args.parse_train_args(state.argv)
    got = {f.name: getattr(obj, f.name) for obj in parsed for f in dataclasses.fields(obj)}
    for spec in SCHEMA.active_specs(state.method):
        assert got[spec.name] == state.typed[spec.name], spec.name
    loaded = backend.load_command(state.command)
    assert {k: loaded[k] for k in changes} == {k: form.values_to_form(SCHEMA.specs, state.typed)[k] for k in changes}


@pytest.mark.parametrize(
    "changes, field_name, message",
    [
        ({"method": "relora", "prune_ratio": "1.5"}, "prune_ratio", "prune_ratio must be in [0, 1)"),
        ({"galore_scale": "-1"}, "galore_scale", "GaLore `scale` must be a positive number"),
        ({"proj_type": "diag"}, "proj_type", "GaLore `proj_type` must be one of"),
        ({"rank": "0"}, "rank", "`rank` must be an integer >= 1, got 0"),
        ({"learning_rate": "-1"}, "learning_rate", "learning_rate must be > 0"),
        ({"max_steps": "ten"}, "max_steps", "`max_steps` must be a whole number, got 'ten'"),
        ({"method": "galore-adafactor", "fira": True}, "fira", "fira needs an Adam-based GaLore method"),
        ({"fira": True, "proj_type": "full"}, "proj_type", "needs a one-sided projection"),
        ({"fira_limiter": "0.5"}, "fira_limiter", "`fira_limiter` (γ) must be >= 1"),
    ],
)
def test_bad_values_show_the_config_own_message_at_the_field(backend, changes, field_name, message):
    state = backend.form_state(form_values(**changes))
    assert message in state.errors[field_name]
    assert field_name in state.errors and "method" not in state.errors
    assert state.command == ""


def test_knobs_of_another_method_are_neither_checked_nor_written(backend):
    state = backend.form_state(form_values(method="full", proj_type="diag", relora_steps="5"))
    assert state.errors == {} and state.command == "hf-pept train --method full"


def test_python_snippet_calls_train_with_what_the_command_parses_to(backend, monkeypatch):
    cli = pytest.importorskip("hf_pept.cli")
    state = backend.form_state(form_values(method="relora", rank="16", prune_ratio="0.5", max_steps="9"))
    calls = []
    monkeypatch.setattr(cli, "train", lambda *groups: calls.append(groups))
    exec(state.snippet, {})
    assert run_args.groups_of(*calls[0]) == run_args.groups_of(*run_args.parse_train_args(state.argv))


def test_memory_panel_estimates_the_real_model_beside_the_references(tmp_path):
    pytest.importorskip("hf_pept.memory")
    from hf_pept import models
    from hf_pept.app.schema import load_estimate

    backend = Backend(SCHEMA, tmp_path, estimate=load_estimate(SCHEMA))
    bars = backend.memory_bars(backend.form_state(form_values(model="tiny", vocab_size="512", rank="16")))
    assert list(bars) == ["this config (galore)", "full-rank AdamW", "lora", "relora", "galore"]
    # Independent reference: full-rank AdamW holds fp32 weights, gradients and two moments of every parameter, plus
    # torch's fp32 `step` counter per parameter tensor.
    params = list(models.build_model("tiny", 512).parameters())
    n = sum(p.numel() for p in params)
    full = bars["full-rank AdamW"]
    assert full["weights"] == pytest.approx(4 * n / 2**20)
    assert full["gradients"] == pytest.approx(4 * n / 2**20)
    assert full["optimizer_state"] == pytest.approx((8 * n + 4 * len(params)) / 2**20)
    assert bars["galore"]["optimizer_state"] < full["optimizer_state"]
    assert bars["lora"]["gradients"] < full["gradients"]
    # an unknown model is named without trying to fetch it from a hub on every keystroke
    state = backend.form_state(form_values(model="no-such-size"))
    assert "neither a size" in state.errors["model"] and backend.memory_bars(state) == {}
    with pytest.raises(ValueError, match="neither a size"):
        load_estimate(SCHEMA)("galore", {"model": "no-such-size"})
