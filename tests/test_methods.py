"""The method table: every method reaches the CLI, the app's sections, memory and compare through it; each stock
entry point it names builds that method in the stock Trainer / peft."""

import dataclasses

import pytest
import torch

from hf_pept import memory, methods, run_args
from hf_pept.cli import main
from hf_pept.models import MODEL_SIZES, build_llama


def test_every_method_is_a_cli_choice_an_estimate_and_listed_by_hf_pept_methods(capsys):
    assert run_args.METHODS == tuple(methods.METHODS)
    assert main(["methods"]) == 0
    listing = capsys.readouterr().out
    for method in methods.METHODS.values():
        assert method.family in methods.FAMILIES
        assert f"hf-pept train --method {method.name}" in listing
        assert method.usage in listing
        if method.paper:
            assert method.paper.arxiv in listing and method.paper.title in listing
        for _, knobs in method.knobs():
            for name, _, _ in knobs:
                assert f"--{name} (default" in listing
        assert memory.estimate(method.name, model="tiny", vocab_size=512).total > 0
    sections = {title: applies for title, _, applies in run_args.method_sections()}
    for method in methods.METHODS.values():
        expected = {group.section_title for group in method.option_groups}
        assert {title for title, applies in sections.items() if method.name in applies} == expected


def test_hf_pept_methods_names_one_method_or_refuses_an_unknown_one(capsys):
    assert main(["methods", "fira"]) == 0
    out = capsys.readouterr().out
    assert "Chen et al. 2024" in out and "galore-8bit" not in out
    assert "--fira (" not in out  # the fira method fixes it
    assert main(["methods", "dora"]) == 2
    assert "method 'dora' is not one of" in capsys.readouterr().err


@pytest.mark.parametrize(
    "size, rank", [("tiny", 16), ("20m", 64), ("60m", 128), ("130m", 192), ("350m", 256), ("1b", 512)]
)
def test_rank_follows_the_model_at_the_papers_ratio(size, rank):
    run = run_args.RunArguments(method="galore", model=size)
    assert run_args.resolve_rank(run, run_args.LowRankArguments()) == rank == MODEL_SIZES[size].hidden_size // 4
    assert run_args.resolve_rank(run, run_args.LowRankArguments(rank=8)) == 8
    assert run_args.resolve_rank(run_args.RunArguments(method="full", model=size), run_args.LowRankArguments()) is None


def _trainer(tmp_path, model, **training_kwargs):
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[], learning_rate=1e-3, **training_kwargs)
    return Trainer(model=model, args=args)


@pytest.mark.parametrize("name", [m.name for m in methods.METHODS.values() if m.family == "optimizer"])
def test_each_optimizer_entry_builds_our_optimizer_in_the_stock_trainer(tmp_path, name):
    import hf_pept  # noqa: F401  (registers the optim names)
    from hf_pept.galore import GaLoreOptimizer

    method = methods.get(name)
    run = run_args.RunArguments(method=name, model="tiny")
    prepared = run_args.prepare(run)
    kwargs = method.trainer_kwargs(method, prepared.config, prepared.groups)
    assert kwargs["optim"] == method.optim_name and f'optim="{method.optim_name}"' in method.usage
    trainer = _trainer(tmp_path, build_llama("tiny", 128, seed=0), max_grad_norm=0.0, **kwargs)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, GaLoreOptimizer)
    projected = [g for g in optimizer.param_groups if g.get("rank") is not None]
    assert projected and all(g["rank"] == 16 and g["fira"] == (name == "fira") for g in projected)
    assert optimizer.layerwise == method.state.layerwise


@pytest.mark.parametrize("name", [m.name for m in methods.METHODS.values() if m.family == "tuner"])
def test_each_tuner_entry_wraps_the_model_with_its_peft_config(name):
    from peft import PeftModel

    method = methods.get(name)
    prepared = run_args.prepare(run_args.RunArguments(method=name, model="tiny"))
    model = method.wrap_model(method, build_llama("tiny", 128, seed=0), prepared.config)
    assert isinstance(model, PeftModel)
    config = model.peft_config["default"]
    assert config.r == 16 and type(config).__name__ in method.usage
    # A: r×in in every adapted linear, whatever the tuner calls it (lora_A / relora_A); SST: the active U, out×r
    factors = [p for n, p in model.named_parameters() if n.endswith(("_A.default.weight", "_U_active.default"))]
    assert len(factors) == 14 and {min(p.shape) for p in factors} == {16}


def test_full_rank_entry_is_plain_adamw(tmp_path):
    method = methods.get("full")
    assert method.wrap_model is None and method.trainer_kwargs is None
    optimizer = _trainer(tmp_path, build_llama("tiny", 128, seed=0), optim="adamw_torch").create_optimizer()
    assert type(optimizer) is torch.optim.AdamW


def test_default_galore_run_projects_and_keeps_far_less_state_than_full_rank(cache_dir, tmp_path, capsys):
    """``hf-pept train --method galore --model tiny`` with no --rank: every targeted matrix is projected (rank 16
    < 64), and the optimizer state the run measured is the estimate's, well below full-rank's."""
    import json

    small = ["--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_steps", "2", "--eval_steps", "0"]
    small += ["--save_steps", "0", "--max_train_tokens", "2048", "--max_eval_tokens", "256"]
    run_dir = tmp_path / "galore"
    assert main(["train", "--method", "galore", "--model", "tiny", *small, "--output_dir", str(run_dir)]) == 0
    assert "galore, rank 16 on a tiny model" in capsys.readouterr().out
    summary = json.loads((run_dir / "summary.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["rank"] == 16 and "rank=16" in config["resolved"]["optim_args"]
    vocab = config["resolved"]["vocab_size"]
    galore = memory.estimate("galore", model="tiny", vocab_size=vocab, seq_len=32, batch_size=2)
    full = memory.estimate("full", model="tiny", vocab_size=vocab, seq_len=32, batch_size=2)
    assert summary["optimizer_state_mb"] * memory.MB == pytest.approx(galore.optimizer_state, rel=1e-3)
    assert galore.optimizer_state < 0.7 * full.optimizer_state


def test_option_groups_mirror_their_configs_once():
    """Each mirrored option group names real fields of its method's config, and every group belongs to a method."""
    for group in methods.option_groups():
        assert group.section_title and methods.group_methods(group)
        for method in map(methods.get, methods.group_methods(group)):
            if method.config_class and getattr(group, "config_fields", None):
                config_fields = {f.name for f in dataclasses.fields(method.config_class)}
                assert set(group.config_fields.values()) <= config_fields, group


def test_the_rank_of_a_local_config_file_follows_its_hidden_size(tmp_path):
    from hf_pept.models import llama_config

    path = tmp_path / "my-llama.json"  # a config file not named config.json, as --model accepts
    llama_config("20m", 512).to_json_file(str(path))
    run = run_args.RunArguments(method="lora", model=str(path))
    assert run_args.resolve_rank(run, run_args.LowRankArguments()) == 64


@pytest.mark.parametrize("name", ["cola", "crnet"])
def test_a_local_architecture_config_keeps_its_own_rank(tmp_path, name):
    import hf_pept

    config_class = {"cola": hf_pept.CoLAConfig, "crnet": hf_pept.CRNetConfig}[name]
    config_class(hidden_size=64, intermediate_size=176, num_attention_heads=4, num_hidden_layers=2, rank=8,
                 vocab_size=128).save_pretrained(str(tmp_path))  # fmt: skip
    run = run_args.RunArguments(method=name, model=str(tmp_path))
    assert run_args.resolve_rank(run, run_args.LowRankArguments()) == 8  # not hidden/4 = 16
    assert run_args.resolve_rank(run, run_args.LowRankArguments(rank=4)) == 4
