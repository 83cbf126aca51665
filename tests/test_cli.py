"""``hf-pept train`` options (generated from the dataclasses) and the train / estimate commands."""

import dataclasses
import json
import math
import os

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


TINY_RUN = [
    "--model", "tiny", "--vocab_size", "512", "--seq_len", "32", "--batch_size", "4", "--max_steps", "6",
    "--logging_steps", "2", "--eval_steps", "3", "--save_steps", "3", "--max_train_tokens", "4096",
    "--max_eval_tokens", "512", "--rank", "8", "--update_proj_gap", "3", "--relora_steps", "3",
    "--restart_warmup_steps", "1",
]  # fmt: skip


# full and lora run folders are also checked by tests/test_compare.py's whole comparison.
@pytest.mark.parametrize("method", ["relora", "galore"])
def test_train_writes_a_complete_run_folder(cache_dir, tmp_path, method):
    from hf_pept.cli import main

    run_dir = tmp_path / method
    assert main(["train", "--method", method, *TINY_RUN, "--output_dir", str(run_dir)]) == 0
    assert {"config.json", "metrics.jsonl", "stdout.log", "summary.json", "checkpoint-6"} <= set(os.listdir(run_dir))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["run"]["method"] == method and config["resolved"]["device"] == "cpu"
    summary = json.loads((run_dir / "summary.json").read_text())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert summary["eval_perplexity"] == pytest.approx(math.exp(evals[-1]["eval_loss"]))
    assert summary["steps"] == 6 and summary["tokens"] == 6 * 4 * 32
    # Trained parameters: every one for full-rank and GaLore; factors + embeddings + head for adapters.
    if method in ("full", "galore"):
        assert summary["trained_params"] == summary["total_params"]
    else:
        assert summary["trained_params"] < summary["total_params"]
    events = {r["event"] for r in records if "event" in r}
    expected_events = {"full": set(), "lora": set(), "relora": {"relora_merge", "optimizer_reset"}}
    assert expected_events.get(method, {"projector_update"}) <= events
    assert "done:" in (run_dir / "stdout.log").read_text()


def test_train_resumes_from_the_last_checkpoint(cache_dir, tmp_path):
    from hf_pept.cli import main

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # Per-step logging: a logged loss averages the steps since the previous log, which a resume restarts.
    common = ["train", "--method", "galore", *TINY_RUN, "--lr_scheduler_type", "constant", "--warmup_ratio", "0"]
    common += ["--logging_steps", "1"]
    assert main([*common, "--output_dir", str(straight)]) == 0
    assert main([*common, "--output_dir", str(resumed), "--max_steps", "3"]) == 0
    assert main([*common, "--output_dir", str(resumed), "--resume_from_checkpoint", "last"]) == 0

    def losses(run_dir):
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        return [(r["step"], r["loss"]) for r in map(json.loads, lines) if "loss" in r]

    assert [s for s, _ in losses(resumed)] == [s for s, _ in losses(straight)]
    assert [v for _, v in losses(resumed)] == pytest.approx([v for _, v in losses(straight)], rel=1e-6)


def test_bad_command_line_input_is_a_clear_error(cache_dir, tmp_path, capsys):
    from hf_pept.cli import main

    assert main(["train", "--seq_len", "0", "--output_dir", str(tmp_path / "x")]) == 2
    assert "seq_len" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--method", "dora"])
    assert main(["fly"]) == 2
    assert main(["train", "--resume_from_checkpoint", "last", "--output_dir", str(tmp_path / "empty")]) == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_app_command_without_the_app_is_a_clear_error(monkeypatch, capsys):
    import sys

    from hf_pept.cli import main

    monkeypatch.setitem(sys.modules, "hf_pept.app", None)
    assert main(["app"]) == 1
    assert "pip install 'hf-pept[app]'" in capsys.readouterr().err


def test_fira_flag_reaches_the_galore_optim_args_and_is_refused_with_adafactor(cache_dir, tmp_path, capsys):
    from hf_pept.cli import main
    from hf_pept.galore.config import GaLoreConfig
    from hf_pept.runner import galore_optim_args

    argv = ["--method", "galore", "--fira", "true", "--fira_limiter", "1.05"]
    run, low_rank, adapter, relora, galore = run_args.parse_train_args(argv)
    assert run_args.parse_train_args(run_args.to_argv(run, low_rank, adapter, relora, galore))[4] == galore
    pairs = dict(item.split("=") for item in galore_optim_args(run, low_rank, galore).split(","))
    config = GaLoreConfig.from_strings(pairs)
    assert (config.fira, config.fira_limiter) == (True, 1.05)

    out = str(tmp_path / "adafactor")
    assert main(["train", "--method", "galore-adafactor", "--fira", "true", "--output_dir", out]) == 2
    assert "fira needs an Adam-based GaLore method" in capsys.readouterr().err
