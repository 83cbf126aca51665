"""Graceful stop of a running ``hf-pept train``: a ``STOP`` file in the run folder ends training after a checkpoint.

The app (or a user with ``touch run_dir/STOP``) asks a run to stop by creating the file; at the next optimizer step
the callback tells the Trainer to save a checkpoint and end training, so the run can be resumed exactly from it.
A file is used rather than a signal because it works the same on every OS, survives an app restart, and leaves a
record of why the run ended.
"""

from __future__ import annotations

import os

from transformers import TrainerCallback

STOP_FILE = "STOP"


def stop_requested(run_dir: str | os.PathLike) -> bool:
    return os.path.exists(os.path.join(run_dir, STOP_FILE))


def request_stop(run_dir: str | os.PathLike, reason: str = "stop requested") -> str:
    """Create the ``STOP`` file of ``run_dir`` and return its path."""
    path = os.path.join(run_dir, STOP_FILE)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(reason + "\n")
    return path


class StopFileCallback(TrainerCallback):
    """Save a checkpoint and end training at the first step end after ``run_dir/STOP`` appears."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = os.fspath(run_dir)

    def on_step_end(self, args, state, control, **kwargs):
        if stop_requested(self.run_dir):
            control.should_save = True
            control.should_training_stop = True
        return control
