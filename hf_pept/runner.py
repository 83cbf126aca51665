"""One pre-training run as a folder: build tokenizer, data, model and method, train with the stock ``Trainer``.

The run folder (``RunArguments.output_dir``) receives:

* ``config.json`` — every option and the values they resolved to (device, precision, learning rate, sizes);
* ``metrics.jsonl`` — written by :class:`~hf_pept.metrics.MetricsCallback` while training;
* ``stdout.log`` — everything the run printed (progress bar included);
* ``checkpoint-N/`` — Trainer checkpoints (resume with ``--resume_from_checkpoint``);
* ``summary.json`` — the totals ``hf-pept compare`` and the app tabulate.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import data, models
from .checkpoints import (
    CheckpointCallback,
    checkpoint_folders,
    incomplete_checkpoints,
    last_complete_checkpoint,
    last_healthy_checkpoint,
)
from .divergence import DivergenceGuard
from .metrics import MB, MetricsCallback
from .preemption import PreemptionCallback
from .run_args import PreparedRun, RunArguments, prepare
from .stop_callback import StopFileCallback, stop_requested

CONFIG_FILE = "config.json"
SUMMARY_FILE = "summary.json"
STDOUT_FILE = "stdout.log"


class _Tee:
    """Writes to the terminal and to the run's ``stdout.log``."""

    def __init__(self, stream, log):
        self.stream, self.log = stream, log

    def write(self, text):
        self.stream.write(text)
        self.log.write(text)
        return len(text)

    def flush(self):
        self.stream.flush()
        self.log.flush()

    def isatty(self):
        return self.stream.isatty()

    def __getattr__(self, name):
        return getattr(self.stream, name)


@contextlib.contextmanager
def _tee_output(path: Path):
    with open(path, "a", encoding="utf-8", buffering=1) as log:
        old_out, old_err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = _Tee(old_out, log), _Tee(old_err, log)
        try:
            yield
        finally:
            sys.stdout, sys.stderr = old_out, old_err


def default_run_dir(run: RunArguments) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{run.method}-{Path(str(run.model)).name}-{stamp}"


def resolve_device(run: RunArguments) -> tuple[str, bool]:
    """``(device type, bf16)`` for the run: the GPU and bf16 mixed precision when there is one (``auto``)."""
    has_cuda = torch.cuda.is_available()
    if run.device == "cuda" and not has_cuda:
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA device; use device='auto' or 'cpu'")
    device = "cuda" if run.device == "cuda" or (run.device == "auto" and has_cuda) else "cpu"
    if run.precision == "bf16":
        if device == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("precision='bf16' needs a GPU with bf16 support; use precision='fp32'")
        return device, True
    if run.precision == "fp32":
        return device, False
    return device, device == "cuda" and torch.cuda.is_bf16_supported()


def hardware_line(device: str) -> str:
    """e.g. ``cpu: x86_64, 2 cores | torch 2.13.0 | transformers 5.23.0 | Python 3.11.7``."""
    import transformers

    if device == "cuda":
        where = f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        where = f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads"
    versions = f"torch {torch.__version__} | transformers {transformers.__version__}"
    return f"{where} | {versions} | Python {platform.python_version()}"


def apply_method(model, prepared: PreparedRun):
    """Wrap ``model`` as the method's tuner does (LoRA, ReLoRA through peft); optimizers and full-rank leave the
    model as it is."""
    method = prepared.method
    return method.wrap_model(method, model, prepared.config) if method.wrap_model else model


def training_arguments(prepared: PreparedRun, run_dir: Path, device: str, bf16: bool):
    from transformers import TrainingArguments

    run, method = prepared.run, prepared.method
    scheduler, scheduler_kwargs = run.lr_scheduler_type, {}
    if scheduler == "cosine" and run.min_lr_ratio > 0:
        scheduler, scheduler_kwargs = "cosine_with_min_lr", {"min_lr_rate": run.min_lr_ratio}
    kwargs: dict[str, Any] = {
        "output_dir": str(run_dir),
        "max_steps": run.max_steps,
        "per_device_train_batch_size": run.batch_size,
        "per_device_eval_batch_size": run.batch_size,
        "gradient_accumulation_steps": run.gradient_accumulation_steps,
        "learning_rate": run.peak_learning_rate,
        "lr_scheduler_type": scheduler,
        "lr_scheduler_kwargs": scheduler_kwargs,
        "warmup_steps": run.warmup_steps,
        "weight_decay": run.weight_decay,
        "max_grad_norm": run.clip_norm,
        "logging_steps": run.logging_steps,
        "logging_first_step": True,
        "eval_strategy": "steps" if run.eval_steps else "no",
        "eval_steps": run.eval_steps or None,
        "save_strategy": "steps",
        "save_steps": run.save_steps or run.max_steps,
        "save_total_limit": None,  # rotation is CheckpointCallback's: after the completion mark, complete ones only
        "seed": run.seed,
        "data_seed": run.seed,
        "bf16": bf16,
        "use_cpu": device == "cpu",
        "report_to": [],
        "dataloader_num_workers": 0,
        # A stream resumes from the state saved in the checkpoint, not by re-reading the batches already trained on.
        "ignore_data_skip": run.streaming,
    }
    if run.gradient_checkpointing:
        kwargs["gradient_checkpointing"] = True
    if method.trainer_kwargs:
        kwargs.update(method.trainer_kwargs(method, prepared.config, prepared.groups))
    return TrainingArguments(**kwargs)


class TrainingFailed(RuntimeError):
    """The run stopped on a fault it reports in one line (divergence, a dead run, a full disk); its folder holds what
    is needed to resume."""


def _report_incomplete(run_dir: Path) -> None:
    for folder, why in incomplete_checkpoints(run_dir):
        print(f"hf-pept: {folder} is incomplete ({why}); not used, left in place", file=sys.stderr)


def _resume_path(run: RunArguments, run_dir: Path) -> str | bool | None:
    if run.resume_from_checkpoint is None:
        return None
    if run.resume_from_checkpoint == "last":
        _report_incomplete(run_dir)
        last = last_complete_checkpoint(run_dir)
        if last is None:
            raise ValueError(f"resume_from_checkpoint='last' but {run_dir} holds no complete checkpoint-N folder")
        return last
    if not os.path.isdir(run.resume_from_checkpoint):
        raise ValueError(f"Checkpoint folder {run.resume_from_checkpoint!r} does not exist")
    return run.resume_from_checkpoint


def _json_safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_json_safe(v) for v in value]
    return str(value)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(_json_safe(payload), indent=2), encoding="utf-8")
    os.replace(temporary, path)


def train(run: RunArguments | None = None, *groups: Any) -> dict[str, Any]:
    """Pre-train as ``run`` and the option groups say and return the run's summary (also in ``summary.json``).

    ``groups`` are option-group instances (``LowRankArguments(rank=8)``, ``GaLoreArguments(...)``) in any order;
    a missing one takes its defaults, so ``train(RunArguments(method="relora"))`` is a run. Every option is
    checked first: a bad one raises ``ValueError`` before any folder is made or any data is read.
    """
    prepared = prepare(run or RunArguments(), *groups)
    run = prepared.run
    run_dir = Path(run.output_dir) if run.output_dir else default_run_dir(run)
    resume = _resume_path(run, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SUMMARY_FILE).unlink(missing_ok=True)  # an earlier segment's summary must not describe this one
    if resume is None:
        _set_aside_earlier_checkpoints(run_dir)
    with _tee_output(run_dir / STDOUT_FILE):
        return _train_in(prepared, run_dir, resume)


def _set_aside_earlier_checkpoints(run_dir: Path) -> None:
    """A fresh run in a folder holding another run's checkpoints: move them to ``previous-<time>/`` (kept, not
    deleted), so that neither ``last`` nor rotation mixes the two runs' checkpoints."""
    earlier = checkpoint_folders(run_dir)
    if not earlier:
        return
    aside = run_dir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    for folder in earlier:
        folder.rename(aside / folder.name)
    print(f"hf-pept: {run_dir} held {len(earlier)} checkpoint(s) of an earlier run; moved to {aside}", file=sys.stderr)


def _load_data(run: RunArguments):
    """``(corpus, tokenizer, train_ds, eval_ds)`` of the run."""
    corpus = data.load_corpus(run.dataset, run.text_field, streaming=run.streaming)
    if run.tokenizer:
        tokenizer = data.load_tokenizer(run.tokenizer)
    else:
        tokenizer = data.get_tokenizer(run.vocab_size, corpus=corpus)
    train_ds, eval_ds = data.build_datasets(
        tokenizer,
        run.seq_len,
        dataset=corpus,
        max_train_tokens=run.max_train_tokens,
        max_eval_tokens=run.max_eval_tokens,
        streaming=run.streaming,
        seed=run.seed,
    )
    training = "streamed training tokens" if run.streaming else f"{len(train_ds) * run.seq_len:,} training tokens"
    print(
        f"data: {corpus.name}; {training}, {len(eval_ds) * run.seq_len:,} held-out tokens in blocks of "
        f"{run.seq_len}; vocabulary {len(tokenizer):,}"
    )
    return corpus, tokenizer, train_ds, eval_ds


def _run_config(prepared: PreparedRun, args, model, corpus, vocab_size: int, device: str, precision: str) -> dict:
    """What ``config.json`` records: every option group, and what the options resolved to."""
    import hf_pept

    run = prepared.run
    groups = {
        cls.__name__: dataclasses.asdict(group) for cls, group in prepared.groups.items() if cls is not RunArguments
    }
    return {
        "run": dataclasses.asdict(run),
        "option_groups": groups,
        "resolved": {
            "method_family": prepared.method.family,
            "rank": prepared.rank,
            "device": device,
            "precision": precision,
            "learning_rate": run.peak_learning_rate,
            "warmup_steps": run.warmup_steps,
            "max_grad_norm": run.clip_norm,
            "optim": args.optim,
            "optim_args": args.optim_args,
            "vocab_size": vocab_size,
            "model_config": model.config.to_dict() if hasattr(model, "config") else None,
            "corpus": corpus.name,
            "corpus_fingerprint": corpus.fingerprint,
            "command": sys.argv,
            "hf_pept_version": hf_pept.__version__,
        },
    }


def _finish(trainer, metrics: MetricsCallback, run_dir: Path, guard, preemption) -> tuple[str, dict[str, Any]]:
    """Evaluate at the last step if the schedule did not, finalise the metrics; ``(status, metrics summary)``."""
    if guard.status:
        status = guard.status
    elif preemption.received and trainer.state.global_step < trainer.state.max_steps:
        status = "preempted"
    else:
        status = "stopped" if stop_requested(run_dir) else "finished"
    last_eval = next((r for r in reversed(trainer.state.log_history) if "eval_loss" in r), None)
    if status == "finished" and (last_eval is None or last_eval.get("step") != trainer.state.global_step):
        trainer.evaluate()  # the table's perplexity is always at the last step
    return status, metrics.finalize(trainer.state, trainer.optimizer)


def _train_or_explain(trainer, resume, run_dir: Path) -> None:
    """``trainer.train``; a full disk becomes a :class:`TrainingFailed` naming the checkpoint to resume from."""
    try:
        trainer.train(resume_from_checkpoint=resume)
    except Exception as err:
        if not _disk_full(err):
            raise
        last = last_complete_checkpoint(run_dir)
        resume_hint = f"the last complete checkpoint is {last}" if last else "no complete checkpoint was saved yet"
        raise TrainingFailed(
            f"no space left on device ({err}); {resume_hint}: free space, then resume with --resume_from_checkpoint "
            "last"
        ) from None


# What the savers raise on a full disk besides OSError(ENOSPC): safetensors' SafetensorError ("No space left on
# device (os error 28)") and torch.save's RuntimeError ("... PytorchStreamWriter failed writing file ...").
_DISK_FULL_WORDS = ("no space left on device", "os error 28", "failed writing file", "file write failed")


def _disk_full(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            return True
        if any(words in str(err).lower() for words in _DISK_FULL_WORDS):
            return True
        err = err.__cause__ or err.__context__
    return False


def _done_line(summary: dict[str, Any], summary_path: Path) -> str:
    """``done: 200 steps, eval perplexity 41.20, peak memory 900 MB, 1200 tokens/s, 95 s; summary in ...``."""
    parts = [f"{summary['steps']} steps"]
    for key, label, fmt in (
        ("eval_perplexity", "eval perplexity ", "{:.2f}"),
        ("peak_memory_mb", "peak memory ", "{:.0f} MB"),
        ("tokens_per_second", "", "{:.0f} tokens/s"),
        ("wall_time_s", "", "{:.0f} s"),
    ):
        if isinstance(summary.get(key), (int, float)):
            parts.append(label + fmt.format(summary[key]))
    return f"done: {', '.join(parts)}; summary in {summary_path}"


def _train_in(prepared: PreparedRun, run_dir: Path, resume) -> dict[str, Any]:
    from transformers import Trainer, set_seed

    import hf_pept  # registers GaLore with transformers and ReLoRA with peft

    started = time.perf_counter()
    run = prepared.run
    device, bf16 = resolve_device(run)
    rank = f", rank {prepared.rank}" if prepared.rank is not None else ""
    print(f"hf-pept {hf_pept.__version__}: {run.method}{rank} on a {run.model} model, run folder {run_dir}")
    corpus, tokenizer, train_ds, eval_ds = _load_data(run)
    set_seed(run.seed)
    max_positions = max(run.seq_len, models.DEFAULT_MAX_POSITION_EMBEDDINGS)
    method = prepared.method
    if method.build_model:  # an architecture of its own (built from config, random weights)
        model = method.build_model(method, run, prepared.config, len(tokenizer), max_positions)
    else:
        model = models.build_model(run.model, len(tokenizer), max_position_embeddings=max_positions)
    total_params = models.count_parameters(model)
    model = apply_method(model, prepared)
    args = training_arguments(prepared, run_dir, device, bf16)
    precision = "bf16 mixed" if bf16 else "fp32"
    _write_json(run_dir / CONFIG_FILE, _run_config(prepared, args, model, corpus, len(tokenizer), device, precision))
    tokens_per_step = run.batch_size * run.gradient_accumulation_steps * args.world_size * run.seq_len
    metrics = MetricsCallback(run_dir, tokens_per_step=tokens_per_step)
    guard = DivergenceGuard(max_bad_steps=run.max_bad_steps, dead_steps=run.dead_steps)
    preemption = PreemptionCallback()
    checkpoints = CheckpointCallback(run.save_total_limit or None, healthy=guard.healthy)  # last: sees every flag
    callbacks = [metrics, StopFileCallback(run_dir), preemption, guard, checkpoints]
    if run.streaming:  # its state file must be in the checkpoint before the completion mark
        callbacks.insert(-1, data.StreamStateCallback(train_ds))
        if resume:
            data.restore_stream_state(train_ds, resume)
    trainer_class, extra = Trainer, {}
    if run.embedding_learning_rate is not None:
        from .embedding_lr import EmbeddingLearningRateTrainer

        trainer_class, extra = EmbeddingLearningRateTrainer, {"embedding_learning_rate": run.embedding_learning_rate}
    trainer = trainer_class(
        model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds, callbacks=callbacks, **extra
    )
    trained_params = models.count_parameters(trainer.model, trainable_only=True)
    print(
        f"model: {total_params / 1e6:.2f}M parameters, {trained_params / 1e6:.2f}M trained ({run.method}); "
        f"{device}, {precision}; {tokens_per_step:,} tokens per optimizer step"
    )
    try:
        _train_or_explain(trainer, resume, run_dir)
    finally:
        preemption.restore()  # also when training raised: the process's own handlers come back
    # After training: ReLoRA's warm start trains the adapted weights too, its low-rank phase only the factors.
    trained_params = models.count_parameters(trainer.model, trainable_only=True)
    status, totals = _finish(trainer, metrics, run_dir, guard, preemption)
    summary = {
        "method": run.method,
        "model": run.model,
        "rank": prepared.rank,
        "seed": run.seed,
        "learning_rate": run.peak_learning_rate,
        "embedding_learning_rate": run.embedding_learning_rate,
        "dataset": corpus.name,
        "status": status,
        "total_params": total_params,
        "trained_params": trained_params,
        **totals,
        "tokens": trainer.state.global_step * tokens_per_step,
        "wall_time_s": time.perf_counter() - started,
        "device": device,
        "precision": precision,
        "hardware": hardware_line(device),
        "skipped_updates": guard.skipped,
        "last_complete_checkpoint": last_complete_checkpoint(run_dir),
    }
    if status == "preempted":
        summary["signal"] = preemption.received
    if guard.failure:
        summary["failure"] = guard.failure
    _write_json(run_dir / SUMMARY_FILE, summary)
    if guard.failure:
        healthy = last_healthy_checkpoint(run_dir)
        where = f"last healthy checkpoint: {healthy}" if healthy else "no healthy checkpoint was saved"
        raise TrainingFailed(f"{guard.failure} ({where}; summary in {run_dir / SUMMARY_FILE})")
    if status == "preempted":
        print(
            f"stopped on {preemption.received} at step {summary['steps']} with a checkpoint; resume with "
            "--resume_from_checkpoint last"
        )
    print(_done_line(summary, run_dir / SUMMARY_FILE))
    return summary


__all__ = ["TrainingFailed", "train", "apply_method", "training_arguments", "resolve_device", "hardware_line", "MB"]
