"""Preemption: SIGTERM (what schedulers send before they kill a job) or SIGINT end the run with a checkpoint.

The first signal only sets a flag; at the next optimizer-step boundary :class:`PreemptionCallback` tells the
Trainer to save a checkpoint and stop, as the ``STOP`` file does, so ``--resume_from_checkpoint last`` continues
exactly. A second signal is not caught any more: it acts as it would without us (SIGINT raises
``KeyboardInterrupt``, SIGTERM terminates the process).

Handlers can only be installed from the main thread; elsewhere (a Trainer run in a worker thread) the callback
does nothing.
"""

from __future__ import annotations

import signal
import sys
import threading

from transformers import TrainerCallback

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class PreemptionCallback(TrainerCallback):
    """Save a checkpoint and stop at the step boundary after the first SIGTERM / SIGINT (see the module docstring).

    :attr:`received` holds the signal's name once one arrived, e.g. ``"SIGTERM"``.
    """

    def __init__(self, signals=SIGNALS):
        self.signals = tuple(signals)
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        self.restore()  # the next signal acts as it would without us
        print(
            f"\nhf-pept: received {self.received}: saving a checkpoint at the end of this step, then stopping "
            f"(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`on_train_begin` (idempotent)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if threading.current_thread() is threading.main_thread():
            for signum in self.signals:
                self._previous[signum] = signal.signal(signum, self._handle)

    def on_step_end(self, args, state, control, **kwargs):
        if self.received:
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()


__all__ = ["PreemptionCallback", "SIGNALS"]
