"""Runs survive faults: a kill while saving, SIGTERM, divergence, a dead run, a full disk.

The unit tests check the pieces against what they promise (marks and sizes, rotation, bit-identical skipped
updates); the end-to-end ones reproduce each fault on a real ``hf-pept train`` as a user would.
"""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from hf_pept import checkpoints
from hf_pept.divergence import DivergenceGuard
from hf_pept.models import build_llama

TINY = [
    "--model", "tiny", "--vocab_size", "512", "--seq_len", "32", "--batch_size", "2", "--max_train_tokens", "4096",
    "--max_eval_tokens", "256", "--eval_steps", "0", "--logging_steps", "1", "--method", "galore",
]  # fmt: skip


# ---- checkpoint marks and rotation -----------------------------------------------------------------------------
def _fake_checkpoint(run_dir: Path, step: int, mark: bool = True, healthy: bool = True) -> Path:
    folder = run_dir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * (100 + step))
    (folder / "trainer_state.json").write_text("{}")
    if mark:
        checkpoints.mark_complete(folder, step, healthy=healthy)
    return folder


def test_a_checkpoint_counts_only_when_marked_and_its_files_have_the_written_sizes(tmp_path):
    _fake_checkpoint(tmp_path, 5)
    ten = _fake_checkpoint(tmp_path, 10)
    (_fake_checkpoint(tmp_path, 15, mark=False) / "trainer_state.json").unlink()  # killed while saving
    _fake_checkpoint(tmp_path, 3, mark=False)  # written before marks existed: whole trainer_state.json
    assert checkpoints.last_complete_checkpoint(tmp_path) == str(ten)
    (ten / "model.safetensors").write_bytes(b"w" * 7)  # truncated after the mark
    assert "model.safetensors has 7 bytes, 110 were written" == checkpoints.incompleteness(ten)
    assert checkpoints.last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-5")
    why = dict((p.name, w) for p, w in checkpoints.incomplete_checkpoints(tmp_path))
    assert set(why) == {"checkpoint-10", "checkpoint-15"} and "no completion mark" in why["checkpoint-15"]
    assert [p.name for p in checkpoints.complete_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-5"]
    (tmp_path / "checkpoint-5" / (checkpoints.MARK_FILE + ".tmp")).write_text("{")  # a crash while marking
    checkpoints.mark_complete(tmp_path / "checkpoint-5", 5)
    assert checkpoints.incompleteness(tmp_path / "checkpoint-5") is None


def test_rotation_keeps_the_newest_complete_and_healthy_ones_and_never_an_incomplete_folder(tmp_path):
    for step in (1, 2):
        _fake_checkpoint(tmp_path, step)
    for step in (3, 4):
        _fake_checkpoint(tmp_path, step, healthy=False)  # saved while updates were being skipped
    (_fake_checkpoint(tmp_path, 5, mark=False) / "trainer_state.json").unlink()  # cut short
    deleted = checkpoints.rotate(tmp_path, save_total_limit=1)
    assert sorted(p.name for p in deleted) == ["checkpoint-1", "checkpoint-3"]
    assert [p.name for p in checkpoints.checkpoint_folders(tmp_path)] == [
        "checkpoint-2",
        "checkpoint-4",
        "checkpoint-5",
    ]


# ---- divergence guard --------------------------------------------------------------------------------------------
def _trainer_objects(tmp_path):
    args = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[])
    return args, TrainerState(), TrainerControl()


def _snapshot(model, optimizer):
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {
        (id(p), key): value.clone() if torch.is_tensor(value) else value
        for p, per_param in optimizer.state.items()
        for key, value in per_param.items()
    }
    return weights, state


def _assert_same(before, after):
    (w0, s0), (w1, s1) = before, after
    assert w0.keys() == w1.keys() and all(torch.equal(w0[n], w1[n]) for n in w0)
    assert s0.keys() == s1.keys()
    for key in s0:
        a, b = s0[key], s1[key]
        assert torch.equal(a, b) if torch.is_tensor(a) else a == b, key


def _galore(model):
    from hf_pept.galore import GaLoreAdamW
    from hf_pept.galore.config import GaLoreConfig
    from hf_pept.galore.integration import galore_param_groups

    groups = galore_param_groups(model, ["q_proj", "up_proj"], GaLoreConfig(rank=8, update_proj_gap=2), 0.0)
    return GaLoreAdamW(groups, lr=1e-2)


def _relora(model):
    from peft import get_peft_model

    from hf_pept import ReLoRAConfig

    model = get_peft_model(model, ReLoRAConfig(r=4, target_modules=["q_proj", "v_proj"], relora_steps=3,
                                               restart_warmup_steps=1))  # fmt: skip
    return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)


@pytest.mark.parametrize("kind", ["adamw", "galore", "relora"])
def test_a_nonfinite_gradient_leaves_weights_and_optimizer_state_bit_identical(tmp_path, kind):
    model = build_llama("tiny", 128, seed=0)
    if kind == "relora":
        model, optimizer = _relora(model)
    elif kind == "galore":
        optimizer = _galore(model)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 128, (2, 16))
    guard = DivergenceGuard(max_bad_steps=2)
    args, state, control = _trainer_objects(tmp_path)
    for _ in range(3):  # moments, step counts and (GaLore) projectors exist before the bad step
        model(input_ids=ids, labels=ids).loss.backward()
        guard.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        optimizer.step()
        optimizer.zero_grad()
        state.global_step += 1
    before = _snapshot(model, optimizer)
    model(input_ids=ids, labels=ids).loss.backward()
    trained = [p for p in model.parameters() if p.grad is not None]
    trained[len(trained) // 2].grad.view(-1)[0] = float("nan")
    guard.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
    optimizer.step()
    _assert_same(before, _snapshot(model, optimizer))
    assert guard.skipped == 1 and guard.healthy() is False and not control.should_training_stop
    event = state.log_history[-1]
    assert (event["event"], event["step"], event["learning_rate"]) == ("nonfinite_update_skipped", 4, 1e-2)


def test_the_guard_stops_after_max_bad_steps_in_a_row_and_resets_on_a_good_one(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    guard = DivergenceGuard(max_bad_steps=3)
    args, state, control = _trainer_objects(tmp_path)

    def step(bad: bool):
        model.weight.grad = torch.full_like(model.weight, float("inf") if bad else 1.0)
        guard.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        state.global_step += 1

    for bad in (True, True, False, True, True):
        step(bad)
    assert not control.should_training_stop and guard.bad_in_a_row == 2
    step(True)
    assert control.should_training_stop and guard.status == "diverged"
    assert "steps 4-6 (3 in a row" in guard.failure and "learning rate 0.5 (peak 5e-05)" in guard.failure


def test_a_run_with_zero_gradient_norm_for_dead_steps_is_stopped_as_dead(tmp_path):
    guard = DivergenceGuard(dead_steps=4)
    args, state, control = _trainer_objects(tmp_path)
    for step, norm in enumerate([0.5, 0.0, 0.0, 0.3, 0.0, 0.0, 0.0], start=1):
        state.global_step = step
        guard.on_log(args, state, control, logs={"loss": 6.24, "grad_norm": norm})
    assert not control.should_training_stop
    state.global_step = 8
    guard.on_log(args, state, control, logs={"loss": 6.24, "grad_norm": 0.0})
    assert control.should_training_stop and guard.status == "dead"
    assert "gradient norm 0 since step 5 (4 steps; loss 6.24)" in guard.failure


# ---- end to end ----------------------------------------------------------------------------------------------
def test_a_diverging_run_stops_with_one_line_and_only_finite_checkpoints(cache_dir, tmp_path, capsys):
    from safetensors.torch import load_file

    from hf_pept.cli import main

    run_dir = tmp_path / "nan"
    argv = ["train", *TINY, "--learning_rate", "1e30", "--max_steps", "30", "--save_steps", "1", "--max_bad_steps",
            "3", "--save_total_limit", "2", "--output_dir", str(run_dir)]  # fmt: skip
    assert main(argv) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # (the progress bar too)
    assert len(errors) == 1 and errors[0].startswith("hf-pept train: error: training diverged: non-finite gradients")
    assert "(peak 1e+30)" in errors[0] and "last healthy checkpoint" in errors[0]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["skipped_updates"] == 3 and summary["steps"] < 30
    folders = checkpoints.complete_checkpoints(run_dir)
    assert folders and checkpoints.last_healthy_checkpoint(run_dir) is not None
    for folder in folders:
        for tensor in load_file(str(folder / "model.safetensors")).values():
            assert torch.isfinite(tensor).all(), folder


DISK_FULL_ERRORS = {
    "oserror": lambda path: OSError(errno.ENOSPC, "No space left on device", path),
    # what torch.save raises when the disk fills while it writes (its C++ stream writer)
    "torch.save": lambda path: RuntimeError(
        "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/3: file write failed"
    ),
}


@pytest.mark.parametrize("kind", list(DISK_FULL_ERRORS))
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint_and_says_so(
    cache_dir, tmp_path, capsys, monkeypatch, kind
):
    from transformers import Trainer

    from hf_pept.cli import main

    original = Trainer._save_optimizer_and_scheduler
    calls = []

    def save_then_fill_the_disk(self, output_dir):
        calls.append(output_dir)
        if len(calls) == 2:
            raise DISK_FULL_ERRORS[kind](output_dir)
        return original(self, output_dir)

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", save_then_fill_the_disk)
    run_dir = tmp_path / "full"
    common = ["train", *TINY, "--max_steps", "6", "--save_steps", "2", "--output_dir", str(run_dir)]
    assert main(common) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no space left on device" in errors[0] and str(run_dir / "checkpoint-2") in errors[0]
    assert checkpoints.last_complete_checkpoint(run_dir) == str(run_dir / "checkpoint-2")
    assert checkpoints.incompleteness(run_dir / "checkpoint-4") is not None
    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", original)
    assert main([*common, "--resume_from_checkpoint", "last"]) == 0
    assert "checkpoint-4 is incomplete" in capsys.readouterr().err
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 6


def _spawn(argv, env_dir):
    env = {**os.environ, "HF_PEPT_CACHE": str(env_dir), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    code = "import sys; from hf_pept.cli import main; sys.exit(main())"
    return subprocess.Popen([sys.executable, "-c", code, "train", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip


def _wait_for(predicate, process, timeout=120.0, poll=0.001):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if process.poll() is not None:
            return None
        time.sleep(poll)
    return None


def test_a_run_killed_while_saving_resumes_from_its_last_complete_checkpoint(cache_dir, tmp_path):
    """SIGKILL the moment a checkpoint folder appears without its mark; ``last`` must skip it."""
    from hf_pept.cli import main

    main(["train", *TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "warm")])  # tokenizer and tokens cached
    for attempt in range(5):
        run_dir = tmp_path / f"killed-{attempt}"
        argv = [*TINY, "--max_steps", "400", "--save_steps", "1", "--output_dir", str(run_dir)]
        process = _spawn(argv, cache_dir)

        def partial_folder(run_dir=run_dir):
            done = {p.name for p in checkpoints.complete_checkpoints(run_dir)}
            if not done:
                return None
            return next((p for p in checkpoints.checkpoint_folders(run_dir) if p.name not in done), None)

        caught = _wait_for(partial_folder, process)
        process.kill()
        process.communicate()
        if caught is not None and checkpoints.incompleteness(caught) is not None:
            break
    else:
        pytest.fail("never caught a checkpoint mid-save in 5 runs")
    last = checkpoints.last_complete_checkpoint(run_dir)
    assert last is not None and Path(last).name != caught.name
    step = int(Path(last).name.split("-")[1])
    resumed = subprocess.run(
        [sys.executable, "-c", "import sys; from hf_pept.cli import main; sys.exit(main())", "train", *TINY,
         "--max_steps", str(step + 2), "--save_steps", "1", "--output_dir", str(run_dir),
         "--resume_from_checkpoint", "last"],
        env={**os.environ, "HF_PEPT_CACHE": str(cache_dir), "CUDA_VISIBLE_DEVICES": ""}, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-6000:] + resumed.stdout[-3000:]
    assert f"{caught.name} is incomplete" in resumed.stderr  # reported before the resumed run writes over it
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == step + 2


def test_sigterm_saves_a_checkpoint_at_the_step_boundary_and_the_run_resumes(cache_dir, tmp_path):
    from hf_pept.cli import main

    main(["train", *TINY, "--max_steps", "1", "--output_dir", str(tmp_path / "warm")])
    run_dir = tmp_path / "preempted"
    process = _spawn([*TINY, "--max_steps", "100000", "--save_steps", "0", "--output_dir", str(run_dir)], cache_dir)

    def training_started():
        path = run_dir / "metrics.jsonl"
        return path.exists() and any('"loss"' in line for line in path.read_text().splitlines())

    assert _wait_for(training_started, process, poll=0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "received SIGTERM" in err and "stopped on SIGTERM" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "preempted" and summary["signal"] == "SIGTERM"
    assert checkpoints.last_complete_checkpoint(run_dir) == str(run_dir / f"checkpoint-{summary['steps']}")
    steps = summary["steps"]
    assert main(["train", *TINY, "--max_steps", str(steps + 2), "--save_steps", "0", "--output_dir", str(run_dir),
                 "--resume_from_checkpoint", "last"]) == 0  # fmt: skip
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["status"] == "finished" and after["steps"] == steps + 2 and math.isfinite(after["eval_perplexity"])


def test_a_fresh_run_in_a_folder_of_an_earlier_run_sets_its_checkpoints_aside(cache_dir, tmp_path, capsys):
    """Without it, a longer earlier run's checkpoint-N would be 'last' and rotation would delete the new ones."""
    from hf_pept.cli import main

    run_dir = tmp_path / "reused"
    common = ["train", *TINY, "--save_steps", "1", "--save_total_limit", "1", "--output_dir", str(run_dir)]
    assert main([*common, "--max_steps", "3"]) == 0
    assert main([*common, "--max_steps", "2"]) == 0
    assert "held 1 checkpoint(s) of an earlier run" in capsys.readouterr().err
    assert [p.name for p in checkpoints.checkpoint_folders(run_dir)] == ["checkpoint-2"]
    (aside,) = run_dir.glob("previous-*")
    assert [p.name for p in checkpoints.checkpoint_folders(aside)] == ["checkpoint-3"]
    assert checkpoints.last_complete_checkpoint(run_dir) == str(run_dir / "checkpoint-2")
