"""``ReLoRACallback``: ReLoRA inside ``transformers.Trainer``, attached automatically.

``import hf_pept`` wraps ``Trainer.__init__`` (see :func:`install_trainer_hook`): when the model holds a
``ReLoRAModel`` and no ``ReLoRACallback`` was passed, one is added. At train begin it adds the jag to the Trainer's
scheduler and sets the warm-start phase for ``state.global_step`` (so a resumed run continues exactly); after every
optimizer step it merges and resets when due and appends the events to ``state.log_history``. Custom trainers
that bypass ``Trainer.__init__`` pass ``callbacks=[ReLoRACallback()]`` themselves.
"""

from __future__ import annotations

import functools
import logging

from transformers import Trainer, TrainerCallback

from ..events import record_event
from .stepper import ReLoRAStepper, find_relora_model

logger = logging.getLogger(__name__)

_HOOK_MARK = "_hf_pept_relora_hook"


def check_training_arguments(args) -> None:
    """Settings that cannot work with ReLoRA, refused before training starts."""
    optim = str(getattr(args.optim, "value", args.optim)).lower()
    if "galore" in optim:
        raise ValueError(
            f"optim={args.optim!r} (GaLore) projects full-rank gradients, but a ReLoRA model trains low-rank "
            "factors: use a standard optimizer such as optim='adamw_torch' with ReLoRA, or GaLore without ReLoRA"
        )
    scheduler = str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)).lower()
    if scheduler in ("reduce_lr_on_plateau", "greedy"):
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
        for event in self.stepper.step(state.global_step):
            name = event.pop("event")
            record_event(state, name, **event)
            logger.info("ReLoRA %s at step %d: %s", name, state.global_step, event)


def _trainer_has_relora_callback(trainer: Trainer) -> bool:
    return any(isinstance(cb, ReLoRACallback) for cb in trainer.callback_handler.callbacks)


def attach_relora_callback(trainer: Trainer) -> bool:
    """Add a ``ReLoRACallback`` to ``trainer`` if its model is a ReLoRA model and it has none; returns if added."""
    model = getattr(trainer, "model", None)
    if model is None or find_relora_model(model) is None or _trainer_has_relora_callback(trainer):
        return False
    check_training_arguments(trainer.args)
    trainer.add_callback(ReLoRACallback())
    return True


def install_trainer_hook() -> None:
    """Wrap ``Trainer.__init__`` once so that ReLoRA models get their callback; idempotent.

    The wrapped surface is the smallest public one: ``Trainer.__init__`` runs unchanged, then the public
    ``Trainer.add_callback`` adds the callback. If a transformers release drops what the hook relies on, this
    raises instead of silently training plain LoRA.
    """
    init = Trainer.__init__
    if getattr(init, _HOOK_MARK, False):
        return
    if not callable(getattr(Trainer, "add_callback", None)):
        raise RuntimeError(
            "hf_pept cannot attach ReLoRA to this transformers.Trainer (no Trainer.add_callback); supported: "
            "transformers>=5.0,<6. Pass callbacks=[hf_pept.ReLoRACallback()] to your Trainer instead."
        )

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if not hasattr(self, "callback_handler"):
            raise RuntimeError(
                "hf_pept: Trainer.__init__ no longer sets callback_handler; ReLoRA cannot attach itself. Supported: "
                "transformers>=5.0,<6; pass callbacks=[hf_pept.ReLoRACallback()] instead."
            )
        attach_relora_callback(self)

    setattr(__init__, _HOOK_MARK, True)
    Trainer.__init__ = __init__
