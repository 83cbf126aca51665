"""SwitchLoRA through the method table: ``hf-pept train --method switchlora``, the memory estimate's host RAM and
the app's event markers."""

import json

import pytest
import torch

from hf_pept.switchlora import CandidatePool


def _pools(model):
    return {name: pool for name, pool in model.named_modules() if isinstance(pool, CandidatePool)}


def test_hf_pept_train_checks_the_knobs_before_any_work():
    from hf_pept import run_args
    from hf_pept.switchlora.arguments import SwitchLoRAArguments

    run = run_args.RunArguments(method="switchlora", model="tiny")
    with pytest.raises(ValueError, match="freeze_steps"):
        run_args.prepare(run, SwitchLoRAArguments(switch_interval=8, freeze_steps=4))
    prepared = run_args.prepare(run, SwitchLoRAArguments(switchlora_alpha=2.0, offload_candidates=False))
    config = prepared.config
    assert (config.r, config.lora_alpha, config.offload_candidates, config.switch_seed) == (16, 2.0, False, 42)
    assert run.peak_learning_rate == 2e-2  # the authors' SwitchLoRA learning rate


def test_hf_pept_train_runs_switchlora_and_the_app_marks_its_switches(cache_dir, tmp_path, capsys):
    from hf_pept.cli import main

    run_dir = tmp_path / "switchlora"
    small = ["--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_steps", "6", "--eval_steps", "0"]
    small += ["--save_steps", "0", "--max_train_tokens", "2048", "--max_eval_tokens", "256", "--logging_steps", "1"]
    assert main(["train", "--method", "switchlora", "--model", "tiny", *small, "--output_dir", str(run_dir)]) == 0
    assert "switchlora, rank 16 on a tiny model" in capsys.readouterr().out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["resolved"]["learning_rate"] == 2e-2
    assert config["option_groups"]["SwitchLoRAArguments"]["switch_interval"] == 40
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    switches = [r for r in records if r.get("event") == "switchlora_switch"]
    assert switches and all(r["vectors"] > 0 and 1 <= r["step"] <= 6 for r in switches)
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6

    pytest.importorskip("matplotlib")
    from hf_pept.app import charts

    run = charts.read_metrics(run_dir)
    figure = charts.training_figure([run])
    loss_axis = figure.axes[0]
    markers = [line for line in loss_axis.lines if len(set(line.get_xdata())) == 1]
    assert {line.get_xdata()[0] for line in markers} == {r["step"] for r in switches}
    assert "switchlora switch" in [text.get_text() for text in loss_axis.get_legend().get_texts()]


def test_memory_estimate_counts_the_pools_as_host_ram():
    from hf_pept import memory
    from hf_pept.models import build_llama
    from hf_pept.run_args import LowRankArguments, RunArguments, prepare
    from hf_pept.runner import apply_method
    from hf_pept.switchlora.arguments import SwitchLoRAArguments

    targets = ["q_proj", "v_proj", "up_proj", "down_proj"]
    for offload in (True, False):
        run = RunArguments(method="switchlora")
        groups = (LowRankArguments(rank=8, target_modules=targets), SwitchLoRAArguments(offload_candidates=offload))
        model = apply_method(build_llama("tiny", 300, max_position_embeddings=16, seed=0), prepare(run, *groups))
        pools = list(_pools(model).values())
        pool_bytes = sum(p.candidates_A.nbytes + p.candidates_B.nbytes for p in pools)
        counters = sum(getattr(p, key).nbytes for p in pools for key in p.TENSORS if "candidates" not in key)
        params = sum(p.numel() * p.element_size() for p in model.parameters())
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        ids = torch.randint(0, 300, (2, 16))
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        estimate = memory.estimate(
            "switchlora", model="tiny", vocab_size=300, seq_len=16, batch_size=2, rank=8, target_modules=targets,
            offload_candidates=offload,
        )  # fmt: skip
        from hf_pept.metrics import optimizer_state_bytes

        assert estimate.optimizer_state == optimizer_state_bytes(optimizer)
        if offload:
            assert (estimate.weights, estimate.host_ram) == (params, pool_bytes + counters)
            assert model.base_model.candidate_host_bytes() == pool_bytes + counters
        else:  # the pools count as weights (the model's pools sit beside the factors once they first switch)
            assert (estimate.weights, estimate.host_ram) == (params + pool_bytes, counters)
        # A square d×d layer holds a pool of d·2d values: twice W.
        assert pools[0].candidates_A.numel() + pools[0].candidates_B.numel() == 2 * 64 * 64
