"""Run folders: launch into its own folder, status from files, stop with a checkpoint, crash tail, busy folder,
resume, and re-attach from the files alone (as after an app restart). A stand-in CLI script plays `hf-pept`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from hf_pept.app import runs
from hf_pept.checkpoints import MARK_FILE, mark_complete

FAKE_CLI = r"""
import json, os, sys, time
argv = sys.argv[1:]
out = argv[argv.index("--output_dir") + 1]
start = 0
if "--resume_from_checkpoint" in argv:
    start = int(argv[argv.index("--resume_from_checkpoint") + 1].rsplit("-", 1)[1])
if "--crash" in argv:
    print("Traceback (most recent call last):\nValueError: lr must be positive, got -1", file=sys.stderr)
    sys.exit(1)
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    for step in range(start + 1, start + 10_000):
        f.write(json.dumps({"step": step, "loss": 10.0 / step}) + "\n"); f.flush()
        if os.path.exists(os.path.join(out, "STOP")):
            os.makedirs(os.path.join(out, f"checkpoint-{step}"))
            # the completion mark the real CLI writes last (hf_pept.checkpoints), here with no files listed
            json.dump({"step": step, "files": {}}, open(os.path.join(out, f"checkpoint-{step}", MARK), "w"))
            sys.exit(0)
        if "--steps" in argv and step >= start + int(argv[argv.index("--steps") + 1]):
            break
        time.sleep(0.02)
json.dump({"final_loss": 0.1}, open(os.path.join(out, "summary.json"), "w"))
"""


@pytest.fixture
def fake_cli(tmp_path):
    script = tmp_path / "fake_cli.py"
    script.write_text(f"MARK = {MARK_FILE!r}\n" + FAKE_CLI)
    return [sys.executable, str(script)]


def wait_for(predicate, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_launch_runs_in_its_own_folder_and_finishes(tmp_path, fake_cli):
    info = runs.launch(tmp_path / "runs", "a", ["--steps", "3"], cli=fake_cli)
    assert info.path == (tmp_path / "runs" / "a").resolve()
    record = json.loads((info.path / runs.PROCESS_FILE).read_text())
    assert record["command"][:2] == ["hf-pept", "train"] and "--output_dir" in record["command"]
    assert wait_for(lambda: runs.run_info(info.path).status == "finished")
    assert runs.run_info(info.path).last_step == 3


def test_stop_saves_a_checkpoint_and_resume_continues_from_it(tmp_path, fake_cli):
    info = runs.launch(tmp_path, "b", [], cli=fake_cli)
    assert runs.run_info(info.path).status == "running"
    assert wait_for(lambda: (runs.run_info(info.path).last_step or 0) >= 3)
    stopped = runs.stop_run(info.path, grace_seconds=10)
    assert stopped.status == "stopped" and stopped.pid is None
    assert len(stopped.checkpoints) == 1
    saved_step = int(stopped.checkpoints[0].split("-")[1])
    with pytest.raises(runs.RunError, match="not running"):
        runs.stop_run(info.path)
    resumed = runs.resume_run(info.path, cli=fake_cli)
    assert resumed.status == "running"
    assert f"checkpoint-{saved_step}" in " ".join(json.loads((info.path / runs.PROCESS_FILE).read_text())["command"])
    assert wait_for(lambda: (runs.run_info(info.path).last_step or 0) > saved_step + 1)
    runs.stop_run(info.path, grace_seconds=10)


def test_second_launch_into_a_busy_or_used_folder_is_refused(tmp_path, fake_cli):
    runs.launch(tmp_path, "c", [], cli=fake_cli)
    with pytest.raises(runs.RunError, match="busy"):
        runs.launch(tmp_path, "c", [], cli=fake_cli)
    runs.stop_run(tmp_path / "c", grace_seconds=10)
    with pytest.raises(runs.RunError, match="already holds a run"):
        runs.launch(tmp_path, "c", [], cli=fake_cli)


def test_crash_shows_the_error_tail_and_keeps_the_logs(tmp_path, fake_cli):
    info = runs.launch(tmp_path, "d", ["--crash"], cli=fake_cli)
    assert wait_for(lambda: runs.run_info(info.path).status == "failed")
    failed = runs.run_info(info.path)
    assert "ValueError: lr must be positive, got -1" in failed.error_tail
    assert (info.path / runs.PROCESS_LOG).exists()
    with pytest.raises(runs.RunError, match="no checkpoint"):
        runs.resume_run(info.path, cli=fake_cli)


def test_reattach_after_restart_reads_state_from_the_folder_only(tmp_path, fake_cli):
    info = runs.launch(tmp_path, "e", [], cli=fake_cli)
    runs._children.clear()  # what an app restart forgets
    listed = {run.name: run for run in runs.list_runs(tmp_path)}
    assert listed["e"].status == "running" and listed["e"].pid == info.pid
    assert runs.stop_run(info.path, grace_seconds=10).status == "stopped"


def test_a_pid_reused_by_another_process_is_not_taken_for_the_run(tmp_path):
    run_dir = tmp_path / "f"
    run_dir.mkdir()
    # our own (alive) pid, but with a different start time: the recorded run is gone
    record = {"pid": __import__("os").getpid(), "create_time": 1.0, "command": ["hf-pept", "train"]}
    (run_dir / runs.PROCESS_FILE).write_text(json.dumps(record))
    assert runs.run_info(run_dir).status == "failed"


@pytest.mark.parametrize("name", ["", "../up", "a b", "x" * 101])
def test_bad_run_names_are_refused(tmp_path, fake_cli, name):
    with pytest.raises(runs.RunError, match="not valid"):
        runs.launch(tmp_path, name, [], cli=fake_cli)


def test_list_runs_of_a_missing_root_is_empty(tmp_path):
    assert runs.list_runs(tmp_path / "none") == []
    assert runs.list_runs(Path(tmp_path)) == []


def test_a_folder_written_by_the_plain_cli_is_listed(tmp_path):
    run_dir = tmp_path / "cli-run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert [(r.name, r.status, r.last_step) for r in runs.list_runs(tmp_path)] == [("cli-run", "unknown", 1)]
    (run_dir / "summary.json").write_text("{}")
    assert runs.run_info(run_dir).status == "finished"


def test_the_method_folders_of_a_compare_run_are_listed_under_its_folder(tmp_path):
    for name in ("compare/full", "compare/galore", "own", ".measure/scratch"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text('{"step": 2, "loss": 2.0}\n')
    (tmp_path / "compare" / "comparison.csv").write_text("method\nfull\ngalore\n")
    (tmp_path / "compare" / "galore" / "summary.json").write_text("{}")
    (tmp_path / "empty").mkdir()  # neither a run nor a folder of runs
    listed = {info.name: info for info in runs.list_runs(tmp_path)}
    assert set(listed) == {"own", "compare/full", "compare/galore"}  # hidden scratch runs are left out
    assert listed["compare/galore"].path == tmp_path / "compare" / "galore"
    assert (listed["compare/galore"].status, listed["compare/full"].status) == ("finished", "unknown")
    assert listed["compare/full"].last_step == 2


def test_incomplete_checkpoints_and_diverged_runs_are_shown_as_such(tmp_path):
    from hf_pept.app.backend import Backend
    from hf_pept.app.schema import load_schema

    run_dir = tmp_path / "nan-run"
    for step in (10, 20):
        (run_dir / f"checkpoint-{step}").mkdir(parents=True)
        (run_dir / f"checkpoint-{step}" / "model.safetensors").write_bytes(b"x" * step)
    mark_complete(run_dir / "checkpoint-10", 10)  # checkpoint-20: the run was killed while writing it
    (run_dir / "summary.json").write_text(json.dumps({"status": "diverged", "steps": 23}))
    info = runs.run_info(run_dir)
    assert (info.status, info.checkpoints, info.incomplete_checkpoints) == (
        "diverged",
        ["checkpoint-10"],
        ["checkpoint-20"],
    )
    row = Backend(load_schema(), tmp_path).run_table([info])[0]
    assert row[1] == "diverged" and row[3] == "1 (+1 incomplete: checkpoint-20)"
