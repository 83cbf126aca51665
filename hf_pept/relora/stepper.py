"""``ReLoRAStepper``: ReLoRA's restarts for any training loop; the Trainer callback is a thin shell around it.

In a plain PyTorch loop::

    model = get_peft_model(model, ReLoRAConfig(r=128, relora_steps=1000, restart_warmup_steps=50))
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    scheduler = transformers.get_cosine_schedule_with_warmup(optimizer, 100, total_steps)
    relora = ReLoRAStepper(model, optimizer, scheduler)      # adds the jag to the scheduler
    for batch in loader:
        model(**batch).loss.backward()
        optimizer.step(); scheduler.step(); optimizer.zero_grad()
        for event in relora.step():                          # merges / resets when due
            print(event)

Everything it does at step t depends on t and the config only (restart steps, seeded re-initialisation and random
pruning), so resuming needs nothing beyond the model, optimizer and scheduler checkpoints plus the step: pass
``global_step`` to the constructor (or save :meth:`state_dict`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..optim_state import drop_optimizer_state, reset_optimizer_state
from ..tuners import derived_generator, find_tuner
from .model import ReLoRAModel
from .schedule import JaggedSchedule, apply_jagged_schedule

_RANDOM_PRUNE_STREAM = 1


def find_relora_model(model: nn.Module) -> ReLoRAModel | None:
    """The ``ReLoRAModel`` inside ``model`` (a ``PeftModel``, a wrapper of one, or itself), or None."""
    return find_tuner(model, ReLoRAModel)


class ReLoRAStepper:
    """Runs ReLoRA's restarts: call :meth:`step` after every optimizer (and scheduler) step.

    Args:
        model: a model holding a ``ReLoRAModel`` (e.g. from ``get_peft_model(model, ReLoRAConfig(...))``).
        optimizer: the optimizer over the model's trainable parameters (it must hold the factors; with
            ``warm_start_steps`` also the adapted weights, which ``get_peft_model`` leaves trainable then).
        lr_scheduler: a ``LambdaLR`` to add the jagged restarts to (in place), or None to leave the LR alone.
        global_step: optimizer steps already taken (when resuming).
    """

    def __init__(self, model: nn.Module, optimizer, lr_scheduler=None, *, global_step: int = 0) -> None:
        relora = find_relora_model(model)
        if relora is None:
            raise ValueError("ReLoRAStepper needs a model built with get_peft_model(model, ReLoRAConfig(...))")
        self.relora = relora
        self.adapter_name = relora.active_adapters[0]
        self.config = relora.peft_config[self.adapter_name]
        self.schedule = JaggedSchedule.from_config(self.config)
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if lr_scheduler is not None:
            apply_jagged_schedule(lr_scheduler, self.schedule)
        self.global_step = global_step
        self._check_optimizer_holds_trainable_parameters()
        self._set_phase()

    def _check_optimizer_holds_trainable_parameters(self) -> None:
        if self.optimizer is None:
            return
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        needed = self.relora.factor_parameters(self.adapter_name)
        if self.schedule.in_warm_start(self.global_step):
            needed = needed + self.relora.base_weights()
        missing = sum(id(p) not in held for p in needed)
        if missing:
            raise ValueError(
                f"the optimizer does not hold {missing} of the ReLoRA parameters it must train (factors, and with "
                "warm_start_steps the adapted weights); build it after get_peft_model from the parameters with "
                "requires_grad=True"
            )

    def _set_phase(self) -> None:
        """Full-rank weights during the warm start, frozen afterwards (also right after a resume)."""
        self.relora.set_base_weights_trainable(self.schedule.in_warm_start(self.global_step))

    def step(self, global_step: int | None = None) -> list[dict[str, Any]]:
        """Account for one finished optimizer step; merge and reset if one is due. Returns the events.

        Each event is ``{"event": "relora_merge" | "optimizer_reset", ...fields}`` (see ``hf_pept.events``).
        """
        self.global_step = self.global_step + 1 if global_step is None else global_step
        step = self.global_step
        events: list[dict[str, Any]] = []
        if self.schedule.is_warm_start_end(step):
            layers = self.relora.merge_and_reinit(self.adapter_name, step=step)
            self.relora.set_base_weights_trainable(False)
            # The frozen weights' moments are dead memory; the factors start afresh (step counter included).
            dropped = drop_optimizer_state(self.optimizer, self.relora.base_weights())
            dropped += drop_optimizer_state(self.optimizer, self.relora.factor_parameters(self.adapter_name))
            events.append({"event": "relora_merge", "layers": layers, "warm_start_end": True})
            events.append({"event": "optimizer_reset", "mode": "drop", "parameters": dropped})
        elif self.schedule.is_merge_step(step):
            layers = self.relora.merge_and_reinit(self.adapter_name, step=step)
            events.append({"event": "relora_merge", "layers": layers})
            if self.optimizer is not None:
                events.append(self._reset_optimizer(step))
        return events

    def _reset_optimizer(self, step: int) -> dict[str, Any]:
        params = self.relora.factor_parameters(self.adapter_name)
        generator = None
        if self.config.optimizer_reset == "random" and params:
            generator = derived_generator(self.config.reinit_seed, step, params[0].device, _RANDOM_PRUNE_STREAM)
        stats = reset_optimizer_state(
            self.optimizer, params, self.config.optimizer_reset, self.config.prune_ratio, generator
        )
        return {
            "event": "optimizer_reset",
            "mode": self.config.optimizer_reset,
            "prune_ratio": self.config.prune_ratio,
            **stats,
        }

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.global_step = int(state_dict["global_step"])
        self._set_phase()
