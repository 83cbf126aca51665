"""``hf-pept train`` options (generated from the dataclasses) and the train / estimate commands."""

import dataclasses
import json
import math
import os

import pytest

from hf_pept import run_args
from hf_pept.galore.config import GaLoreConfig
from hf_pept.relora.arguments import ReLoRAArguments
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
    parsed = run_args.parse_train_args(argv)
    groups = run_args.groups_of(*parsed)
    run, low_rank, relora = groups[run_args.RunArguments], groups[run_args.LowRankArguments], groups[ReLoRAArguments]
    assert (run.method, low_rank.rank, low_rank.target_modules, relora.relora_steps) == (
        "relora",
        8,
        ["q_proj", "v_proj"],
        60,
    )
    assert run_args.parse_train_args(run_args.to_argv(*parsed)) == parsed


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


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "nonsense"], "Model 'nonsense' is neither a size"),
        (["--dataset", "/does/not/exist"], "Dataset path /does/not/exist does not exist"),
        (["--dataset", "corpus/missing.txt"], "Dataset path corpus/missing.txt does not exist"),
        (["--update_proj_gap", "0"], "`update_proj_gap` must be >= 1, got 0"),
        (["--method", "galore", "--proj_type", "diag"], "`proj_type` must be one of"),
        (["--method", "relora", "--relora_steps", "10", "--restart_warmup_steps", "20"], "relora_steps (10)"),
        (["--method", "lora", "--lora_dropout", "1.5"], "lora_dropout"),
        (["--rank", "0"], "`rank` must be an integer >= 1"),
        (["--seq_len", "0"], "`seq_len` must be an integer >= 1"),
        (["--method", "dora"], "argument --method: invalid choice: 'dora'"),
        (["--max_steps", "many"], "invalid int value: 'many'"),
        (["--no_such_option", "1"], "unrecognized arguments: --no_such_option 1"),
    ],
)
def test_bad_input_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, argv, message):
    """Exit status 2, one line on stderr naming the value, no traceback, no run folder, no corpus read."""
    from hf_pept import data
    from hf_pept.cli import main

    def no_corpus(*args, **kwargs):
        raise AssertionError("the corpus was loaded before the options were checked")

    monkeypatch.setattr(data, "load_corpus", no_corpus)
    out = tmp_path / "run"
    assert main(["train", *argv, "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("hf-pept train: error: ")
    assert not out.exists()


def test_hub_names_are_owner_slash_name_and_paths_are_not():
    from hf_pept.data import is_hub_name

    assert is_hub_name("allenai/c4") and is_hub_name("allenai/c4:en") and is_hub_name("roneneldan/TinyStories")
    for text in ("/does/not/exist", "./corpus", "c4", "corpus/missing.txt", "a/b/c", "data/notes.jsonl"):
        assert not is_hub_name(text), text


def test_other_bad_command_lines_are_clear_errors(cache_dir, tmp_path, capsys):
    from hf_pept.cli import main

    assert main(["fly"]) == 2
    assert main(["train", "--resume_from_checkpoint", "last", "--output_dir", str(tmp_path / "empty")]) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "compare", "estimate", "methods", "app"])
def test_help_of_every_command_reads_as_text(capsys, command):
    """--help exits 0, names the subcommand in its usage line, and shows no Python object or cut sentence."""
    from hf_pept.cli import main

    if command == "app":
        pytest.importorskip("gradio")
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: hf-pept {command}")
    assert "{'" not in text and "%(" not in text and "Traceback" not in text
    description = text.split("\n\n")[1].strip()
    assert description.endswith("."), description


def test_train_help_shows_every_option_with_its_help(capsys):
    from hf_pept.cli import main

    assert main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for cls in run_args.ARGUMENT_CLASSES:
        for f in dataclasses.fields(cls):
            assert f"--{f.name}" in text
            words = " ".join(f.metadata["help"].split()[:6])
            assert words in text, (f.name, words)


def test_app_command_without_the_app_is_a_clear_error(monkeypatch, capsys):
    import sys

    from hf_pept.cli import main

    monkeypatch.setitem(sys.modules, "hf_pept.app", None)
    assert main(["app"]) == 1
    assert "pip install 'hf-pept[app]'" in capsys.readouterr().err


def test_fira_flag_reaches_the_galore_optim_args_and_is_refused_with_adafactor(cache_dir, tmp_path, capsys):
    from hf_pept.cli import main
    from hf_pept.galore.config import GaLoreConfig
    from hf_pept.runner import training_arguments

    argv = ["--method", "galore", "--fira", "true", "--fira_limiter", "1.05"]
    parsed = run_args.parse_train_args(argv)
    assert run_args.parse_train_args(run_args.to_argv(*parsed)) == parsed
    args = training_arguments(run_args.prepare(*parsed), tmp_path, "cpu", False)
    config = GaLoreConfig.from_strings(dict(item.split("=") for item in args.optim_args.split(",")))
    assert (config.fira, config.fira_limiter, config.rank) == (True, 1.05, 16)  # rank: tiny's hidden 64 / 4

    out = tmp_path / "adafactor"
    assert main(["train", "--method", "galore-adafactor", "--fira", "true", "--output_dir", str(out)]) == 2
    assert "fira needs an Adam-based GaLore method" in capsys.readouterr().err
    assert not out.exists()
