"""Runs as folders: launch ``hf-pept train`` as a subprocess in its own folder, stop it, resume it, list runs.

The app holds no training state. Everything it knows about a run it reads back from the run folder, so reloading
the page or restarting the app re-attaches to runs that are still going:

- ``process.json``: pid and start time of the launched process (its own process group), the command, the time;
- ``process.log``: the subprocess's stdout and stderr (tracebacks land here);
- ``STOP``: written by :func:`stop_run`; the CLI's stop callback saves a checkpoint and ends training;
- what the CLI writes itself: ``config.json``, ``metrics.jsonl``, ``stdout.log``, ``checkpoint-N/``,
  ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hf_pept.checkpoints import complete_checkpoints, incomplete_checkpoints
from hf_pept.stop_callback import STOP_FILE, request_stop

PROCESS_FILE = "process.json"
PROCESS_LOG = "process.log"
SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
RUN_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# Popen objects of the runs this app process launched, kept so that finished children are reaped (no zombies).
_children: dict[str, subprocess.Popen] = {}


class RunError(ValueError):
    """A run cannot be launched, stopped or resumed; the message says why and what to do."""


@dataclass
class RunInfo:
    name: str
    path: Path
    # running | stopping | finished | stopped | preempted | diverged | dead | failed | unknown (not launched here,
    # no summary yet); diverged / dead / preempted are the summary's own words (see hf_pept.divergence)
    status: str
    pid: int | None
    command: list[str]
    last_step: int | None
    checkpoints: list[str]
    error_tail: str
    incomplete_checkpoints: list[str] = dataclasses.field(default_factory=list)


def cli_command() -> list[str]:
    """How to start the CLI with this interpreter (the console script may not be on PATH)."""
    return [sys.executable, "-c", "import sys; from hf_pept.cli import main; sys.exit(main())"]


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _process_start_time(pid: int) -> float | None:
    """Start time of ``pid`` (to tell our process from a later one that reused the pid), None if it is gone."""
    try:
        import psutil
    except ImportError:
        try:
            os.kill(pid, 0)
        except OSError:
            return None
        return -1.0
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc.create_time()
    except psutil.Error:
        return None


def _is_alive(record: dict | None) -> bool:
    if not record or "pid" not in record:
        return False
    child = _children.get(str(record.get("run_dir")))
    if child is not None and child.poll() is not None:
        return False
    started = _process_start_time(int(record["pid"]))
    if started is None:
        return False
    recorded = record.get("create_time")
    return started < 0 or recorded is None or abs(started - float(recorded)) < 1.0


def checkpoints(run_dir: Path) -> list[str]:
    """Complete checkpoint folders of a run (marked by the CLI once fully written), oldest first (by step)."""
    return [p.name for p in complete_checkpoints(run_dir)]


def incomplete(run_dir: Path) -> list[str]:
    """Checkpoint folders the run did not finish writing (killed or out of disk while saving): never resumed from."""
    return [p.name for p, _ in incomplete_checkpoints(run_dir)]


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 16_000))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _last_step(run_dir: Path) -> int | None:
    text = tail(run_dir / METRICS_FILE, lines=5)
    for line in reversed(text.splitlines()):
        try:
            step = json.loads(line).get("step")
        except ValueError:
            continue
        if step is not None:
            return int(step)
    return None


def run_info(run_dir: str | os.PathLike, name: str | None = None) -> RunInfo:
    """Read a run folder's state; a run the app did not launch (plain CLI) is read the same way. ``name`` is how
    the run is shown (default: its folder's name)."""
    run_dir = Path(run_dir)
    record = _read_json(run_dir / PROCESS_FILE)
    alive = _is_alive(record)
    stop = (run_dir / STOP_FILE).exists()
    has_summary = (run_dir / SUMMARY_FILE).exists()
    if alive:
        status = "stopping" if stop else "running"
    elif stop:
        status = "stopped"
    elif has_summary:
        recorded_status = (_read_json(run_dir / SUMMARY_FILE) or {}).get("status")
        status = recorded_status if recorded_status in ("preempted", "diverged", "dead") else "finished"
    elif record is None:
        status = "unknown"  # a plain `hf-pept train` run still going, or one that died: no process record
    else:
        status = "failed"
    error_tail = ""
    if status in ("failed", "diverged", "dead"):
        error_tail = tail(run_dir / PROCESS_LOG) or tail(run_dir / "stdout.log")
    return RunInfo(
        name=name or run_dir.name,
        path=run_dir,
        status=status,
        pid=int(record["pid"]) if alive else None,
        command=list(record.get("command", [])) if record else [],
        last_step=_last_step(run_dir),
        checkpoints=checkpoints(run_dir),
        error_tail=error_tail,
        incomplete_checkpoints=incomplete(run_dir),
    )


def is_run_dir(path: Path) -> bool:
    """A folder with a process record, metrics or a summary."""
    return path.is_dir() and any((path / f).exists() for f in (PROCESS_FILE, METRICS_FILE, SUMMARY_FILE))


def list_runs(runs_root: str | os.PathLike) -> list[RunInfo]:
    """Every run folder under ``runs_root``, newest first, named by its path under the root.

    A sub-folder that is not a run itself is looked into once more: ``hf-pept compare`` puts one run per method
    there (``compare/galore``). Hidden folders (the app's ``.measure`` scratch runs) are left out.
    """
    root = Path(runs_root)
    if not root.is_dir():
        return []
    found = []
    for child in _visible_dirs(root):
        if is_run_dir(child):
            found.append(run_info(child))
        else:
            found += [run_info(run, f"{child.name}/{run.name}") for run in _visible_dirs(child) if is_run_dir(run)]
    return sorted(found, key=lambda info: info.path.stat().st_mtime, reverse=True)


def _visible_dirs(folder: Path) -> list[Path]:
    return [child for child in folder.iterdir() if child.is_dir() and not child.name.startswith(".")]


def new_run_name(method: str, model: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", f"{method}-{Path(str(model)).name}")
    return f"{safe}-{stamp}"


def launch(
    runs_root: str | os.PathLike,
    name: str,
    train_argv: list[str],
    output_dir_flag: str = "--output_dir",
    resume_from: str | None = None,
    resume_flag: str = "--resume_from_checkpoint",
    env: dict[str, str] | None = None,
    cli: list[str] | None = None,
) -> RunInfo:
    """Start ``hf-pept train <train_argv> --output_dir runs_root/name`` detached, logging into the folder.

    ``cli`` replaces the interpreter's ``hf-pept`` (tests use a stand-in script).
    Raises :class:`RunError` for a bad name or a folder whose run is still going (a second launch would mix two
    runs' files); an existing folder of a finished/stopped/failed run is only reused when resuming.
    """
    if not RUN_NAME_PATTERN.match(name or ""):
        raise RunError(f"Run name {name!r} is not valid: use letters, digits, '.', '_' or '-' (at most 100).")
    run_dir = Path(runs_root).resolve() / name
    if run_dir.exists():
        info = run_info(run_dir)
        if info.status in ("running", "stopping"):
            raise RunError(f"Run folder {run_dir} is busy: its run (pid {info.pid}) is still {info.status}.")
        if resume_from is None and any(run_dir.iterdir()):
            raise RunError(
                f"Run folder {run_dir} already holds a run ({info.status}); choose another name, or resume it."
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STOP_FILE).unlink(missing_ok=True)
    argv = ["train", *train_argv, output_dir_flag, str(run_dir)]
    if resume_from is not None:
        checkpoint = Path(resume_from)
        if not checkpoint.is_absolute():
            checkpoint = run_dir / checkpoint
        if not checkpoint.is_dir():
            raise RunError(f"Checkpoint {checkpoint} does not exist; available: {checkpoints(run_dir) or 'none'}.")
        argv += [resume_flag, str(checkpoint)]
    command = (cli or cli_command()) + argv
    log = open(run_dir / PROCESS_LOG, "ab")
    try:
        proc = subprocess.Popen(
            command,
            cwd=run_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # its own process group: stop ends the whole tree (dataloader workers too)
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
    finally:
        log.close()
    record = {
        "pid": proc.pid,
        "create_time": _process_start_time(proc.pid),
        "command": ["hf-pept", *argv],
        "run_dir": str(run_dir),
        "started_at": time.time(),
    }
    (run_dir / PROCESS_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")
    _children[str(run_dir)] = proc
    return run_info(run_dir)


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_run(run_dir: str | os.PathLike, grace_seconds: float = 60.0, poll: float = 0.2) -> RunInfo:
    """Ask the run to save a checkpoint and end (``STOP`` file); end its process group if it has not within
    ``grace_seconds`` (SIGTERM, then SIGKILL)."""
    run_dir = Path(run_dir)
    info = run_info(run_dir)
    if info.status not in ("running", "stopping"):
        raise RunError(f"Run {info.name} is not running (status: {info.status}).")
    request_stop(run_dir, reason="stopped from the app")
    deadline = time.monotonic() + grace_seconds
    record = _read_json(run_dir / PROCESS_FILE)
    while time.monotonic() < deadline and _is_alive(record):
        time.sleep(poll)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not _is_alive(record):
            break
        _kill_group(int(record["pid"]), sig)
        end = time.monotonic() + 5.0
        while time.monotonic() < end and _is_alive(record):
            time.sleep(poll)
    return run_info(run_dir)


def resume_run(run_dir: str | os.PathLike, checkpoint: str | None = None, **launch_kwargs) -> RunInfo:
    """Relaunch a stopped/failed run's own command from ``checkpoint`` (default: its latest) in the same folder."""
    run_dir = Path(run_dir)
    info = run_info(run_dir)
    if info.status in ("running", "stopping"):
        raise RunError(f"Run {info.name} is still {info.status}; stop it before resuming.")
    available = info.checkpoints
    if not available:
        raise RunError(f"Run {info.name} has no checkpoint to resume from.")
    checkpoint = checkpoint or available[-1]
    output_dir_flag = launch_kwargs.get("output_dir_flag", "--output_dir")
    resume_flag = launch_kwargs.get("resume_flag", "--resume_from_checkpoint")
    train_argv = _train_argv_of(info.command, output_dir_flag, resume_flag)
    return launch(run_dir.parent, run_dir.name, train_argv, resume_from=checkpoint, **launch_kwargs)


def _train_argv_of(command: list[str], output_dir_flag: str, resume_flag: str) -> list[str]:
    """The user's train options of a recorded command (drops ``hf-pept train``, the output dir and any resume)."""
    if "train" not in command:
        raise RunError("This run has no recorded `hf-pept train` command (it was not launched from the app).")
    argv = command[command.index("train") + 1 :]
    kept, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token in (output_dir_flag, resume_flag):
            skip = True
            continue
        kept.append(token)
    return kept
