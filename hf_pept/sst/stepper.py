"""``SSTStepper``: SST's per-step work for any training loop; the Trainer callback is a thin shell around it.

In a plain PyTorch loop::

    model = get_peft_model(model, SSTConfig(r=64, iteration_steps=200, iteration_warmup_steps=20))
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    scheduler = transformers.get_cosine_schedule_with_warmup(optimizer, 100, total_steps)
    sst = SSTStepper(model, optimizer, scheduler)      # adds the per-iteration warm-up to the scheduler
    for batch in loader:
        model(**batch).loss.backward()
        optimizer.step(); scheduler.step(); optimizer.zero_grad()
        for event in sst.step():                       # Σ ≥ 0, unit columns; resample / re-SVD when due
            print(event)

After every optimizer step (Zhao et al. 2025, arXiv 2405.15481, §4): Σ ← max(Σ, 0) and the active columns of U and V
back to unit norm (:meth:`SSTStepper.project`). At the end of an iteration (:class:`~hf_pept.sst.schedule.SSTSchedule`)
new vectors are swapped in, and at the end of a round U·diag(Σ)·Vᵀ is decomposed again first (:meth:`advance`).

**Optimizer state at a swap.** The paper resets the momentum of the active partition when it changes. The active
Parameters keep their identity, so their state is reset in place: every per-entry moment (Adam's ``exp_avg``,
``exp_avg_sq``, SGD's ``momentum_buffer``, bitsandbytes' 8-bit codes) is zeroed and the step counter set to 0 — the
numbers a freshly created state holds, so Adam's bias correction restarts too (zeroing the moments alone would,
with β = (0.9, 0.999), make the next updates up to ~6× larger than Adam's first steps). Our choices where the paper is silent: the whole
active state restarts, vectors drawn again included (torch's optimizers keep one step counter per Parameter, not
per column); Σ keeps its state at a resample (its entries keep their meaning) and restarts at a re-SVD (index i
then names a different triplet).

What happens at step t depends on t, the config and the tensors a checkpoint holds (Σ for the sampling), so resuming
needs nothing beyond the model, optimizer and scheduler checkpoints plus the step (the constructor's
``global_step``, or :meth:`state_dict`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..events import unwrap_optimizer
from ..fsdp import refuse_sharded
from ..optim_state import reset_optimizer_state
from ..tuners import find_tuner
from .model import SSTModel
from .schedule import SSTSchedule, apply_iteration_warmup

RESAMPLE_EVENT = "sst_resample"
RESVD_EVENT = "sst_resvd"


def find_sst_model(model: nn.Module) -> SSTModel | None:
    """The ``SSTModel`` inside ``model`` (a ``PeftModel``, a wrapper of one, or itself), or None."""
    return find_tuner(model, SSTModel)


@torch.no_grad()
def restart_optimizer_state(optimizer, params: list[nn.Parameter]) -> int:
    """Zero every per-entry moment of ``params`` and set their step counters to 0, in place (the state a fresh
    parameter gets at its first update, with its tensors kept allocated); returns how many parameters had state."""
    if optimizer is None:
        return 0
    reset_optimizer_state(optimizer, params, "zero")
    state_by_param = unwrap_optimizer(optimizer).state
    restarted = 0
    for param in params:
        state = state_by_param.get(param)
        if not state:
            continue
        restarted += 1
        if "step" in state:
            if torch.is_tensor(state["step"]):
                state["step"].zero_()
            else:
                state["step"] = 0
    return restarted


class SSTStepper:
    """Runs SST's schedule: call :meth:`step` after every optimizer (and scheduler) step.

    Args:
        model: a model holding an ``SSTModel`` (e.g. from ``get_peft_model(model, SSTConfig(...))``).
        optimizer: the optimizer over the model's trainable parameters; it must hold every layer's Σ and active
            columns of U and V (``get_peft_model`` leaves exactly those, plus ``modules_to_save``, trainable).
        lr_scheduler: a ``LambdaLR`` to add the per-iteration warm-up to (in place), or None to leave the LR alone.
        global_step: optimizer steps already taken (when resuming).
    """

    def __init__(self, model: nn.Module, optimizer, lr_scheduler=None, *, global_step: int = 0) -> None:
        sst = find_sst_model(model)
        if sst is None:
            raise ValueError("SSTStepper needs a model built with get_peft_model(model, SSTConfig(...))")
        refuse_sharded(sst.parameters(), "SST", "its resampling and re-SVD work on whole U, Σ and V")
        self.sst = sst
        self.adapter_name = sst.active_adapters[0]
        self.config = sst.peft_config[self.adapter_name]
        self.schedule = SSTSchedule(
            self.config.iteration_steps, sst.round_iterations(self.adapter_name), self.config.iteration_warmup_steps
        )
        self.optimizer = optimizer
        self.lr_scheduler = lr_scheduler
        if lr_scheduler is not None and self.config.iteration_warmup_steps > 0:
            apply_iteration_warmup(lr_scheduler, self.schedule)
        self.global_step = global_step
        self._check_optimizer_holds_trainable_parameters()

    def _check_optimizer_holds_trainable_parameters(self) -> None:
        if self.optimizer is None:
            return
        held = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = sum(id(p) not in held for p in self.sst.trainable_sst_parameters(self.adapter_name))
        if missing:
            raise ValueError(
                f"the optimizer does not hold {missing} of the SST parameters it must train (each layer's Σ and "
                "active columns of U and V); build it after get_peft_model from the parameters with requires_grad=True"
            )

    def project(self) -> None:
        """Σ ← max(Σ, 0) and unit-norm active columns (after an optimizer step that updated them)."""
        self.sst.project(self.adapter_name)

    def advance(self, global_step: int | None = None) -> list[dict[str, Any]]:
        """Account for one finished optimizer step; re-SVD and resample when due. Returns the events, each
        ``{"event": "sst_resvd" | "sst_resample", ...fields}`` (see ``hf_pept.events``)."""
        self.global_step = self.global_step + 1 if global_step is None else global_step
        step = self.global_step
        events: list[dict[str, Any]] = []
        if self.schedule.is_resvd_step(step):
            stats = self.sst.resvd(self.adapter_name)
            restarted = restart_optimizer_state(self.optimizer, self.sst.sigma_parameters(self.adapter_name))
            events.append(
                {
                    "event": RESVD_EVENT,
                    "round": step // self.schedule.round_steps,
                    **stats,
                    "state_restarted": restarted,
                }
            )
        if self.schedule.is_resample_step(step):
            stats = self.sst.resample(self.adapter_name, step=step)
            restarted = restart_optimizer_state(self.optimizer, self.sst.active_vector_parameters(self.adapter_name))
            events.append(
                {
                    "event": RESAMPLE_EVENT,
                    "iteration": step // self.schedule.iteration_steps,
                    "r": self.config.r,
                    **stats,
                    "state_restarted": restarted,
                }
            )
        return events

    def step(self, global_step: int | None = None) -> list[dict[str, Any]]:
        """:meth:`project`, then :meth:`advance`: the whole of SST's work after one optimizer step."""
        self.project()
        return self.advance(global_step)

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.global_step = int(state_dict["global_step"])
