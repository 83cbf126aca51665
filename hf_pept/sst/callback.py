"""``SSTCallback``: SST inside ``transformers.Trainer``, attached automatically.

``import hf_pept`` wraps ``Trainer.__init__`` (see :func:`hf_pept.tuners.install_trainer_hook`): when the model holds
an ``SSTModel`` and no ``SSTCallback`` was passed, one is added. At train begin it adds the per-iteration warm-up to
the Trainer's scheduler (for ``state.global_step``, so a resumed run continues exactly); after each optimizer step
that updated the SST parameters it clamps Σ and renormalises the active columns; at each step end it resamples and
re-SVDs when due and appends the events to ``state.log_history``. Custom trainers that bypass ``Trainer.__init__``
pass ``callbacks=[SSTCallback()]`` themselves.
"""

from __future__ import annotations

import logging

from transformers import Trainer, TrainerCallback

from .. import tuners
from .stepper import SSTStepper, find_sst_model

logger = logging.getLogger(__name__)


def check_training_arguments(args, iteration_warmup_steps: int) -> None:
    """Settings that cannot work with SST, refused before training starts."""
    tuners.refuse_galore_optim(args, "SST")
    if iteration_warmup_steps > 0 and tuners.lr_scheduler_name(args) in tuners.NOT_STEP_BASED_SCHEDULERS:
        raise ValueError(
            f"lr_scheduler_type={args.lr_scheduler_type!r} is not step-based; SST's per-iteration warm-up needs a "
            "LambdaLR schedule (e.g. 'cosine', 'linear', 'constant_with_warmup'), or iteration_warmup_steps=0"
        )


def _warmup_steps(model) -> int:
    sst = find_sst_model(model) if model is not None else None
    return sst.peft_config[sst.active_adapters[0]].iteration_warmup_steps if sst is not None else 0


class SSTCallback(TrainerCallback):
    """Σ clamp, column renormalisation, resampling, re-SVD and the per-iteration warm-up for an SST model."""

    def __init__(self) -> None:
        self.stepper: SSTStepper | None = None

    def on_init_end(self, args, state, control, model=None, **kwargs):
        check_training_arguments(args, _warmup_steps(model))

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        if model is None or find_sst_model(model) is None:
            raise ValueError("SSTCallback needs a model built with get_peft_model(model, SSTConfig(...))")
        check_training_arguments(args, _warmup_steps(model))
        self.stepper = SSTStepper(model, optimizer, lr_scheduler, global_step=state.global_step)

    def on_optimizer_step(self, args, state, control, **kwargs):
        # A step whose gradients were dropped (hf_pept.divergence) left every parameter untouched: so do we.
        if self.stepper is not None and any(
            p.grad is not None for p in self.stepper.sst.trainable_sst_parameters(self.stepper.adapter_name)
        ):
            self.stepper.project()

    def on_step_end(self, args, state, control, **kwargs):
        if self.stepper is None:
            return
        tuners.record_tuner_events(state, self.stepper.advance(state.global_step), "SST", logger)


def attach_sst_callback(trainer: Trainer) -> bool:
    """Add an ``SSTCallback`` to ``trainer`` if its model is an SST model and it has none; returns if added."""
    return tuners.attach_tuner_callback(
        trainer, find_sst_model, SSTCallback, lambda args, model: check_training_arguments(args, _warmup_steps(model))
    )


def install_trainer_hook() -> None:
    """Wrap ``Trainer.__init__`` once (shared by our tuners) so that SST models get their callback; idempotent."""
    tuners.add_trainer_attacher("sst", attach_sst_callback)
    tuners.install_trainer_hook()
