"""``hf-pept train`` options (generated from the dataclasses) and the train / estimate commands."""

import dataclasses

import pytest

from hf_pept import run_args
from hf_pept.galore.config import GaLoreConfig
from hf_pept.relora.config import ReLoRAConfig


def test_every_option_has_help_and_a_unique_flag():
    names = []
    for cls in run_args.ARGUMENT_CLASSES:
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
            names.append(f.name)
    assert len(names) == len(set(names))
    help_text = run_args.parser().format_help()
    assert "--relora_steps" in help_text and "--update_proj_gap" in help_text and "--galore_scale" in help_text


def test_mirrored_knobs_take_default_and_help_from_the_method_configs():
    galore = {f.name: f for f in dataclasses.fields(GaLoreConfig)}
    relora = {f.name: f for f in dataclasses.fields(ReLoRAConfig)}
    ours = {f.name: f for cls in run_args.ARGUMENT_CLASSES for f in dataclasses.fields(cls)}
    assert ours["galore_scale"].default == galore["scale"].default
    assert ours["galore_scale"].metadata["help"] == galore["scale"].metadata["help"]
    assert ours["relora_steps"].default == relora["relora_steps"].default
    assert ours["lora_alpha"].metadata["help"] == relora["lora_alpha"].metadata["help"]


def test_parse_round_trip():
    argv = ["--method", "relora", "--rank", "8", "--target_modules", "q_proj", "v_proj", "--relora_steps", "60"]
    run, low_rank, adapter, relora, galore = run_args.parse_train_args(argv)
    assert (run.method, low_rank.rank, low_rank.target_modules, relora.relora_steps) == (
        "relora",
        8,
        ["q_proj", "v_proj"],
        60,
    )
    again = run_args.parse_train_args(run_args.to_argv(run, low_rank, adapter, relora, galore))
    assert again == (run, low_rank, adapter, relora, galore)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"method": "dora"}, "method 'dora'"),
        ({"seq_len": 0}, "seq_len"),
        ({"learning_rate": -1.0}, "learning_rate"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"precision": "fp8"}, "precision"),
    ],
)
def test_bad_run_arguments_name_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_args.RunArguments(**kwargs)


def test_method_defaults():
    assert run_args.RunArguments(method="galore-layerwise").clip_norm == 0.0
    assert run_args.RunArguments(method="full").clip_norm == 1.0
    assert run_args.RunArguments(method="galore").peak_learning_rate == 1e-2
    assert run_args.RunArguments(method="full", max_steps=200, warmup_ratio=0.1).warmup_steps == 20
    sections = run_args.method_sections()
    assert {m for _, _, methods in sections for m in methods} == set(run_args.METHODS) - {"full"}
