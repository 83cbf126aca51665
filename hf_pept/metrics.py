"""Perplexity, memory and the ``metrics.jsonl`` of a run folder.

``metrics.jsonl`` holds one JSON object per line, in training order:

* a training record per logging step: ``step, epoch, loss, lr, grad_norm, tokens_per_second, peak_memory_mb``;
* an evaluation record per evaluation: ``step, epoch, eval_loss, eval_perplexity, peak_memory_mb``;
* every event (``{"event": name, "step": ..., ...}``, see :mod:`hf_pept.events`) that a callback appended to
  ``trainer.state.log_history`` or that the optimizer reported through ``pop_events()`` (GaLore's
  ``projector_update``), so ReLoRA merges and optimizer resets appear where they happened.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .events import is_event, unwrap_optimizer

METRICS_FILE = "metrics.jsonl"
MB = 2**20
_RENAMED = {"learning_rate": "lr"}
_DROPPED = {"total_flos", "train_runtime", "train_samples_per_second", "train_steps_per_second"}


def perplexity(eval_loss: float) -> float:
    """exp(mean token negative log-likelihood) — the papers' validation perplexity.

    ``eval_loss`` must be the mean NLL over *tokens*. The Trainer's ``eval_loss`` is that for our datasets: it
    averages per-batch mean losses weighted by batch size, and every sequence has the same number of predicted
    tokens (fixed-length blocks, no padding). Returns ``inf`` where exp overflows.
    """
    try:
        return math.exp(eval_loss)
    except OverflowError:
        return math.inf


def _linux_rss_fields() -> dict[str, int] | None:
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    out = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(rest.split()[0]) * 1024
    return out or None


class PeakMemory:
    """Peak memory of training: CUDA's peak allocated bytes on a GPU; on CPU the process's peak resident set size.

    On Linux the RSS high-water mark is reset at :meth:`reset` (``/proc/self/clear_refs``), so the peak belongs to
    the training that follows, not to data loading before it. Elsewhere it is the process-lifetime peak.
    """

    def __init__(self, device: torch.device | str | None = None):
        device = torch.device(device) if device is not None else None
        self.cuda = device is not None and device.type == "cuda" and torch.cuda.is_available()
        self.device = device
        self.baseline_bytes = 0

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            return
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
                handle.write("5")  # 5: reset the peak RSS (Linux ≥ 4.0, proc(5))
        except OSError:
            pass
        fields = _linux_rss_fields()
        self.baseline_bytes = fields["VmRSS"] if fields else 0

    def peak_bytes(self) -> int:
        if self.cuda:
            return int(torch.cuda.max_memory_allocated(self.device))
        fields = _linux_rss_fields()
        if fields and "VmHWM" in fields:
            return fields["VmHWM"]
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.cuda else "process_peak_rss"


def optimizer_state_bytes(optimizer: Any) -> int:
    """Bytes of every tensor in ``optimizer.state`` (moments, projectors, 8-bit blocks and their scales)."""
    optimizer = unwrap_optimizer(optimizer)
    total = 0
    for state in getattr(optimizer, "state", {}).values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                total += value.numel() * value.element_size()
    return total


def peak_saved_activation_bytes(model: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """Most bytes held at once by tensors autograd saved for backward (parameters excluded), over one forward and
    backward of ``model(input_ids=..., labels=input_ids)``: what a recomputation scheme is measured by. Storages
    are counted once however many saved tensors view them; gradients are left in ``.grad``."""
    import weakref

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    live: dict[int, list[int]] = {}  # storage -> [bytes, saved tensors alive on it]
    current = peak = 0

    def release(ptr):
        nonlocal current
        live[ptr][1] -= 1
        if live[ptr][1] == 0:
            current -= live.pop(ptr)[0]

    def pack(tensor):
        nonlocal current, peak
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in params:
            return tensor
        if ptr not in live:
            live[ptr] = [tensor.untyped_storage().nbytes(), 0]
            current += live[ptr][0]
            peak = max(peak, current)
        live[ptr][1] += 1
        weakref.finalize(tensor, release, ptr)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(input_ids=input_ids, labels=input_ids).loss.backward()
    return peak


class MetricsCallback(TrainerCallback):
    """Writes ``run_dir/metrics.jsonl`` (see the module docstring) as training goes.

    ``tokens_per_step`` (tokens in one optimizer step, all devices) gives ``tokens_per_second``; left ``None`` it is
    read from the first training sequence's length and the batch settings. After training, :attr:`summary` holds
    the run's totals (tokens/s over the whole run, peak memory, optimizer-state bytes, last eval).
    """

    def __init__(self, run_dir: str | os.PathLike, tokens_per_step: int | None = None, device=None):
        self.path = Path(run_dir) / METRICS_FILE
        self.tokens_per_step = tokens_per_step
        self.memory = PeakMemory(device)
        self.summary: dict[str, Any] = {}
        self._written = 0
        self._last_time = None
        self._last_step = 0
        self._train_start = None
        self._train_end = None
        self._start_step = 0
        self._optimizer_state_bytes = 0
        # Seconds spent evaluating and saving checkpoints: left out of tokens/s, which measures training.
        self._paused = 0.0
        self._paused_at_last_log = 0.0
        self._step_end_time = None

    # ---- helpers ------------------------------------------------------------------------------------------
    def _append(self, records: list[dict[str, Any]]) -> None:
        if not records:
            return
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, allow_nan=True) + "\n")

    def _drop_records_after(self, step: int) -> None:
        """On resume: forget what an interrupted run wrote after the checkpoint it resumes from."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if int(record.get("step", 0)) <= step:
                kept.append(line)
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def _format(self, record: dict[str, Any], state) -> dict[str, Any] | None:
        if is_event(record):
            return dict(record)
        out = {"step": int(record.get("step", state.global_step))}
        for key, value in record.items():
            if key in _DROPPED or key == "step":
                continue
            out[_RENAMED.get(key, key)] = value
        if "train_loss" in out and "loss" not in out:
            return None  # the Trainer's end-of-training average; summary.json keeps it
        if "eval_loss" in out:
            out["eval_perplexity"] = perplexity(out["eval_loss"])
        elif "loss" in out:
            now, step = time.perf_counter(), state.global_step
            seconds = now - (self._last_time or now) - (self._paused - self._paused_at_last_log)
            if step > self._last_step and self.tokens_per_step and seconds > 0:
                out["tokens_per_second"] = (step - self._last_step) * self.tokens_per_step / seconds
            self._last_time, self._last_step, self._paused_at_last_log = now, step, self._paused
        out["peak_memory_mb"] = self.memory.peak_bytes() / MB
        return out

    def _flush(self, state) -> None:
        new = state.log_history[self._written :]
        self._written = len(state.log_history)
        self._append([r for r in (self._format(record, state) for record in new) if r is not None])

    # ---- Trainer events -----------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.memory.device is None:
            self.memory = PeakMemory(args.device)
        if self.tokens_per_step is None and train_dataloader is not None:
            dataset = getattr(train_dataloader, "dataset", None)
            try:
                seq_len = int(dataset[0]["input_ids"].shape[-1])
            except (TypeError, KeyError, IndexError, AttributeError):
                seq_len = None
            if seq_len:
                batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
                self.tokens_per_step = batch * seq_len
        if state.global_step > 0:
            self._drop_records_after(state.global_step)
        elif self.path.exists():
            self.path.unlink()
        self._written = len(state.log_history)  # a resumed run's history is already in the file
        self.memory.reset()
        self._train_start = self._last_time = self._step_end_time = time.perf_counter()
        self._start_step = self._last_step = state.global_step
        self._train_end, self._paused, self._paused_at_last_log = None, 0.0, 0.0

    def _pause_since_step_end(self) -> None:
        if self._train_end is not None:  # an evaluation after training: the training time is already fixed
            return
        now = time.perf_counter()
        if self._step_end_time is not None:
            self._paused += now - self._step_end_time
        self._step_end_time = now

    def on_evaluate(self, args, state, control, **kwargs):
        self._pause_since_step_end()

    def on_save(self, args, state, control, **kwargs):
        self._pause_since_step_end()

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self._step_end_time = time.perf_counter()
        inner = unwrap_optimizer(optimizer)
        if inner is not None and hasattr(inner, "pop_events"):
            for event in inner.pop_events():
                state.log_history.append({**event, "step": int(state.global_step)})
        if state.global_step == self._start_step + 1 and inner is not None:
            self._optimizer_state_bytes = optimizer_state_bytes(inner)  # state exists after the first step

    def on_log(self, args, state, control, logs=None, **kwargs):
        self._flush(state)

    def on_train_end(self, args, state, control, optimizer=None, **kwargs):
        self.finalize(state, optimizer)

    def finalize(self, state, optimizer=None) -> dict[str, Any]:
        """Write what is left of ``metrics.jsonl`` and compute :attr:`summary` from ``state``; call it again after
        a final evaluation that follows training (the training time stays that of the first call)."""
        self._flush(state)
        if self._train_end is None:  # a second call (after a final evaluation) keeps the training time
            self._pause_since_step_end()
            self._train_end = time.perf_counter()
        elapsed = self._train_end - (self._train_start or self._train_end) - self._paused
        steps = state.global_step - self._start_step
        evals = [r for r in state.log_history if "eval_loss" in r]
        inner = unwrap_optimizer(optimizer)
        state_bytes = optimizer_state_bytes(inner) if inner is not None else self._optimizer_state_bytes
        self.summary = {
            "steps": int(state.global_step),
            "train_seconds": elapsed,
            "tokens_per_second": steps * (self.tokens_per_step or 0) / elapsed if elapsed > 0 else None,
            "peak_memory_mb": self.memory.peak_bytes() / MB,
            "peak_memory_kind": self.memory.kind,
            "memory_at_train_start_mb": self.memory.baseline_bytes / MB,
            "optimizer_state_mb": max(state_bytes, self._optimizer_state_bytes) / MB,  # the larger of first / last
            "optimizer_state_final_mb": state_bytes / MB,  # after the last step (ReLoRA: its low-rank phase)
        }
        if evals:
            self.summary["eval_loss"] = evals[-1]["eval_loss"]
            self.summary["eval_perplexity"] = perplexity(evals[-1]["eval_loss"])
        train_losses = [r["loss"] for r in state.log_history if "loss" in r]
        if train_losses:
            self.summary["final_train_loss"] = train_losses[-1]
        return self.summary
