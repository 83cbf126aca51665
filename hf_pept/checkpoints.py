"""Crash-safe checkpoints: a ``checkpoint-N`` folder counts only once it is marked complete.

The Trainer writes a checkpoint file by file into ``checkpoint-N/``; a process killed on the way (OOM, preemption,
a full disk) leaves a partial folder that ``get_last_checkpoint`` would pick and fail to load. Here a checkpoint is
*complete* when its mark, :data:`MARK_FILE`, is there and every file it lists has the recorded size (a folder with
no mark counts when its ``trainer_state.json``, the Trainer's last file, is whole: checkpoints of older runs). The mark is
written after the Trainer has written everything (:class:`CheckpointCallback`, ``on_save``), to a temporary name
and renamed, so it is all or nothing.

Rotation (``save_total_limit``) is done here too, after the mark, counting complete checkpoints only: the
Trainer's own rotation runs before any callback could mark the new folder, orders folders by modification time and
counts partial ones, so it could delete the last complete checkpoint. Incomplete folders are reported and left
for the user; they are never deleted.

For a stock ``Trainer``::

    args = TrainingArguments("out", save_total_limit=None, ...)       # rotation is the callback's
    trainer = Trainer(..., callbacks=[CheckpointCallback(save_total_limit=2)])
    trainer.train(resume_from_checkpoint=last_complete_checkpoint("out"))
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from transformers import TrainerCallback

MARK_FILE = "hf_pept_checkpoint.json"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")


def checkpoint_folders(run_dir: str | os.PathLike) -> list[Path]:
    """Every ``checkpoint-N`` folder of ``run_dir``, by step."""
    root = Path(run_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _files_and_sizes(folder: Path) -> dict[str, int]:
    return {
        str(p.relative_to(folder)): p.stat().st_size
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in (MARK_FILE, MARK_FILE + ".tmp")  # a crash's temporary mark is not data
    }


def mark_complete(folder: str | os.PathLike, step: int, healthy: bool = True) -> None:
    """Write ``folder``'s mark: its files and their sizes (temporary file, fsync, rename)."""
    folder = Path(folder)
    payload = {"step": int(step), "healthy": bool(healthy), "files": _files_and_sizes(folder)}
    temporary = folder / (MARK_FILE + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, folder / MARK_FILE)


def read_mark(folder: str | os.PathLike) -> dict | None:
    try:
        return json.loads((Path(folder) / MARK_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def incompleteness(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` is not a complete checkpoint, or None when it is."""
    folder = Path(folder)
    mark = read_mark(folder)
    if mark is None:
        # No mark: a checkpoint written before marks existed, or a kill after the Trainer's last file. The Trainer
        # writes trainer_state.json after every other file, so the folder counts when that file is whole.
        try:
            json.loads((folder / TRAINER_STATE).read_text(encoding="utf-8"))
            return None
        except (OSError, ValueError):
            return f"no completion mark and no readable {TRAINER_STATE}: the run ended while saving it"
    for name, size in mark.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} were written"
    return None


def complete_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    return [p for p in checkpoint_folders(run_dir) if incompleteness(p) is None]


def incomplete_checkpoints(run_dir: str | os.PathLike) -> list[tuple[Path, str]]:
    """``(folder, why)`` of every ``checkpoint-N`` folder that is not complete."""
    return [(p, why) for p in checkpoint_folders(run_dir) if (why := incompleteness(p)) is not None]


def last_complete_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint of ``run_dir`` (the one ``--resume_from_checkpoint last`` resumes)."""
    complete = complete_checkpoints(run_dir)
    return str(complete[-1]) if complete else None


def last_healthy_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The newest complete checkpoint saved while training was healthy (see :class:`~hf_pept.divergence.DivergenceGuard`)."""
    healthy = [p for p in complete_checkpoints(run_dir) if (read_mark(p) or {}).get("healthy", True)]
    return str(healthy[-1]) if healthy else None


def rotate(run_dir: str | os.PathLike, save_total_limit: int | None) -> list[Path]:
    """Delete the oldest complete checkpoints beyond ``save_total_limit``; never the newest complete or the newest
    healthy one, never an incomplete folder. Returns what was deleted."""
    if not save_total_limit:
        return []
    complete = complete_checkpoints(run_dir)
    keep = set(complete[-save_total_limit:])
    healthy = last_healthy_checkpoint(run_dir)
    if healthy:
        keep.add(Path(healthy))
    deleted = [p for p in complete if p not in keep]
    for folder in deleted:
        shutil.rmtree(folder, ignore_errors=True)
    return deleted


class CheckpointCallback(TrainerCallback):
    """Marks each checkpoint complete once the Trainer has written it, then rotates (see the module docstring).

    ``healthy`` (a callable returning bool, e.g. a divergence guard's) is recorded in the mark, so rotation keeps the
    newest checkpoint saved before a run started to go wrong. Set ``save_total_limit=None`` in ``TrainingArguments``
    and give the limit here.
    """

    def __init__(self, save_total_limit: int | None = None, healthy=None):
        self.save_total_limit = save_total_limit
        self.healthy = healthy or (lambda: True)

    def _drop_stale_mark(self, args, state, control) -> None:
        # A save at this step writes into checkpoint-<step>; a folder of that name left by an earlier, longer run
        # must not keep claiming completeness while it is being overwritten.
        if control.should_save and state.is_world_process_zero:
            (Path(args.output_dir) / f"checkpoint-{state.global_step}" / MARK_FILE).unlink(missing_ok=True)

    def on_step_end(self, args, state, control, **kwargs):
        self._drop_stale_mark(args, state, control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._drop_stale_mark(args, state, control)

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir():
            mark_complete(folder, state.global_step, healthy=self.healthy())
            rotate(args.output_dir, self.save_total_limit)


__all__ = [
    "MARK_FILE",
    "CheckpointCallback",
    "checkpoint_folders",
    "complete_checkpoints",
    "incomplete_checkpoints",
    "incompleteness",
    "last_complete_checkpoint",
    "last_healthy_checkpoint",
    "mark_complete",
    "rotate",
]
