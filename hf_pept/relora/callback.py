"""``ReLoRACallback``: ReLoRA inside ``transformers.Trainer``, attached automatically.

``import hf_pept`` wraps ``Trainer.__init__`` (see :func:`install_trainer_hook`): when the model holds a
``ReLoRAModel`` and no ``ReLoRACallback`` was passed, one is added. At train begin it adds the jag to the Trainer's
scheduler and sets the warm-start phase for ``state.global_step`` (so a resumed run continues exactly); after every
optimizer step it merges and resets when due and appends the events to ``state.log_history``. Custom trainers
that bypass ``Trainer.__init__`` pass ``callbacks=[ReLoRACallback()]`` themselves.
"""

from __future__ import annotations

import logging

from transformers import Trainer, TrainerCallback

from .. import tuners
from .stepper import ReLoRAStepper, find_relora_model

logger = logging.getLogger(__name__)


def check_training_arguments(args) -> None:
    """Settings that cannot work with ReLoRA, refused before training starts."""
    tuners.refuse_galore_optim(args, "ReLoRA")
    if tuners.lr_scheduler_name(args) in tuners.NOT_STEP_BASED_SCHEDULERS:
        raise ValueError(
            f"lr_scheduler_type={args.lr_scheduler_type!r} is not step-based; ReLoRA's jagged restarts need a "
            "LambdaLR schedule (e.g. 'cosine', 'linear', 'constant_with_warmup')"
        )


class ReLoRACallback(TrainerCallback):
    """Merges, optimizer resets, jagged learning rate and warm start for a ReLoRA model in a ``Trainer``."""

    def __init__(self) -> None:
        self.stepper: ReLoRAStepper | None = None

    def on_init_end(self, args, state, control, **kwargs):
        check_training_arguments(args)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kwargs):
        check_training_arguments(args)
        if model is None or find_relora_model(model) is None:
            raise ValueError("ReLoRACallback needs a model built with get_peft_model(model, ReLoRAConfig(...))")
        self.stepper = ReLoRAStepper(model, optimizer, lr_scheduler, global_step=state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        if self.stepper is None:
            return
        tuners.record_tuner_events(state, self.stepper.step(state.global_step), "ReLoRA", logger)


def attach_relora_callback(trainer: Trainer) -> bool:
    """Add a ``ReLoRACallback`` to ``trainer`` if its model is a ReLoRA model and it has none; returns if added."""
    return tuners.attach_tuner_callback(
        trainer, find_relora_model, ReLoRACallback, lambda args, model: check_training_arguments(args)
    )


def install_trainer_hook() -> None:
    """Wrap ``Trainer.__init__`` once (shared by our tuners) so that ReLoRA models get their callback; idempotent."""
    tuners.add_trainer_attacher("relora", attach_relora_callback)
    tuners.install_trainer_hook()
