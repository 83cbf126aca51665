"""``SwitchLoRACallback``: SwitchLoRA inside ``transformers.Trainer``, attached automatically.

``import hf_pept`` wraps ``Trainer.__init__`` (shared with ReLoRA, :mod:`hf_pept.tuners`): when the model holds a
``SwitchLoRAModel`` and no ``SwitchLoRACallback`` was passed, one is added. The Trainer calls
``on_pre_optimizer_step`` after gradient clipping and right before ``optimizer.step()`` — the point where the
authors' loop switches — and ``on_optimizer_step`` right after it; the callback runs the
:class:`~hf_pept.switchlora.SwitchLoRAStepper` there and appends a ``switchlora_switch`` event (step, vectors
switched, layers that switched) to ``state.log_history`` at the end of every step that switched. T of the schedule
is the Trainer's ``max_steps``; a resumed run starts the stepper at ``state.global_step``. Custom trainers that
bypass ``Trainer.__init__`` pass ``callbacks=[SwitchLoRACallback()]`` themselves.
"""

from __future__ import annotations

import logging

from transformers import Trainer, TrainerCallback

from .. import tuners
from ..events import record_event
from .stepper import SwitchLoRAStepper, find_switchlora_model

logger = logging.getLogger(__name__)
EVENT = "switchlora_switch"


def check_training_arguments(args) -> None:
    """Settings that cannot work with SwitchLoRA, refused before training starts."""
    tuners.refuse_galore_optim(args, "SwitchLoRA")


class SwitchLoRACallback(TrainerCallback):
    """Switches, freezes, optimizer-state resets and per-vector bias correction for a SwitchLoRA model."""

    def __init__(self) -> None:
        self.stepper: SwitchLoRAStepper | None = None
        self._event: dict | None = None

    def on_init_end(self, args, state, control, **kwargs):
        check_training_arguments(args)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        check_training_arguments(args)
        if model is None or find_switchlora_model(model) is None:
            raise ValueError(
                "SwitchLoRACallback needs a model built with get_peft_model(model, SwitchLoRAConfig(...))"
            )
        if args.weight_decay > 0:
            logger.warning(
                "SwitchLoRA with weight_decay=%g: frozen vectors still decay (their gradient is zeroed, AdamW's decay "
                "is not); the paper's runs use 0",
                args.weight_decay,
            )
        self.stepper = SwitchLoRAStepper(model, optimizer, state.max_steps, global_step=state.global_step)

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        if self.stepper is not None:
            self._event = self.stepper.before_optimizer_step(state.global_step)

    def on_optimizer_step(self, args, state, control, **kwargs):
        if self.stepper is not None:
            self.stepper.after_optimizer_step()

    def on_step_end(self, args, state, control, **kwargs):
        if self._event is not None:
            fields = {k: v for k, v in self._event.items() if k != "event"}
            record_event(state, EVENT, **fields)
            self._event = None


def attach_switchlora_callback(trainer: Trainer) -> bool:
    """Add a ``SwitchLoRACallback`` to ``trainer`` if its model is a SwitchLoRA model and it has none."""
    return tuners.attach_tuner_callback(
        trainer, find_switchlora_model, SwitchLoRACallback, lambda args, model: check_training_arguments(args)
    )


def install_trainer_hook() -> None:
    """Wrap ``Trainer.__init__`` once (shared by our tuners) so that SwitchLoRA models get their callback."""
    tuners.add_trainer_attacher("switchlora", attach_switchlora_callback)
    tuners.install_trainer_hook()
