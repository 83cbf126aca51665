"""Training events (ReLoRA merges, optimizer resets, GaLore projector refreshes, SST resamples and re-SVDs) as log
records.

An event is a dict ``{"event": name, "step": global_step, **fields}``. Callbacks append it to the Trainer's
``state.log_history`` (so it is saved with checkpoints and shows in ``trainer.state.log_history``); the metrics
callback writes every new log-history record, events included, to the run's ``metrics.jsonl``. Optimizers
that produce events expose ``pop_events() -> list[dict]``, drained by the metrics callback after each step.
"""

from __future__ import annotations

from typing import Any

EVENT_KEY = "event"


def record_event(state: Any, name: str, **fields: Any) -> dict[str, Any]:
    """Append event ``name`` at ``state.global_step`` to ``state.log_history`` and return the record."""
    record = {EVENT_KEY: name, "step": int(state.global_step), **fields}
    state.log_history.append(record)
    return record


def is_event(record: dict[str, Any]) -> bool:
    return EVENT_KEY in record


def unwrap_optimizer(optimizer: Any) -> Any:
    """The user's optimizer inside accelerate's ``AcceleratedOptimizer`` (and similar ``.optimizer`` wrappers)."""
    seen = set()
    while optimizer is not None and hasattr(optimizer, "optimizer") and id(optimizer) not in seen:
        seen.add(id(optimizer))
        optimizer = optimizer.optimizer
    return optimizer
