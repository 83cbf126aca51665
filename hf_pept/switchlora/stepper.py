"""``SwitchLoRAStepper``: SwitchLoRA's per-step work for any training loop; the Trainer callback is a thin shell.

One optimizer step, in the authors' order (backward → clip → switch → step):

1. :meth:`~SwitchLoRAStepper.before_optimizer_step` — for every adapted layer draw k(t) (``schedule.py``), switch
   k rows of A from A's pointer on and k columns of B from B's, each stopping at a frozen vector (frozen vectors
   are never chosen); each switch folds into W (``layer.py``) and freezes the counterpart for N =
   ``freeze_steps`` steps: switching row i of A changes ∂L/∂B[:, i] (it depends on A[i, :]), not ∂L/∂A[i, :]
   (it depends on B[:, i], unchanged). So the counterpart B[:, i]'s optimizer moments are zeroed and its own step
   count restarts, while A[i, :] keeps its state. Then the gradients of all frozen vectors are zeroed and their
   counters count down (a vector frozen now sits out N steps, this one included).
2. ``optimizer.step()``.
3. :meth:`~SwitchLoRAStepper.after_optimizer_step` — per-vector bias correction: torch's Adam/AdamW keep one step
   counter per parameter, the authors' optimizer one per row of A / column of B. For every vector whose moments
   were restarted, the update just made is redone with its own count c (``hf_pept.optim_state.redo_adam_update_``),
   until its correction equals the shared one in fp32 (β₂ = 0.999: about 17k steps after its restart).

Other optimizers: any per-entry state with the parameter's shape (SGD momentum, bitsandbytes 8-bit Adam moments)
has the counterpart's row / column zeroed, their step counters stay shared (no per-vector bias correction), and
state of another shape (Adafactor's factored moments) is left as it is, with a warning. GaLore optimizers are
refused: they project full-rank gradients, and SwitchLoRA trains low-rank factors. Weight decay: as in the authors'
optimizer, AdamW still decays a frozen vector (its gradient is zero, its decay is not); their scripts use 0.

In a plain PyTorch loop::

    model = get_peft_model(model, SwitchLoRAConfig(r=128))
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)
    switch = SwitchLoRAStepper(model, optimizer, total_steps=T)
    for batch in loader:
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        event = switch.before_optimizer_step()
        optimizer.step()
        switch.after_optimizer_step()
        optimizer.zero_grad()

Everything the stepper changes lives in the model (pools, slots, pointers, freeze counters, reset steps: see
``CandidatePool``) or the optimizer (moments, step counters), and the draws depend on (``switch_seed``, t) only, so
resuming needs the model and optimizer checkpoints and the step (``global_step``).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ..events import unwrap_optimizer
from ..fsdp import refuse_sharded
from ..optim_state import (
    adam_step_count,
    is_torch_adam,
    own_bias_correction_needed,
    param_group_of,
    redo_adam_update_,
    reset_optimizer_state,
)
from ..tuners import find_tuner
from .model import SwitchLoRAModel
from .schedule import SwitchSchedule

logger = logging.getLogger(__name__)


def find_switchlora_model(model: nn.Module) -> SwitchLoRAModel | None:
    """The ``SwitchLoRAModel`` inside ``model`` (a ``PeftModel``, a wrapper of one, or itself), or None."""
    return find_tuner(model, SwitchLoRAModel)


def check_optimizer(optimizer) -> None:
    """Refuse optimizers that cannot train SwitchLoRA's factors (GaLore's projected updates)."""
    from ..galore.optimizer import GaLoreOptimizer

    if isinstance(unwrap_optimizer(optimizer), GaLoreOptimizer):
        raise ValueError(
            "a GaLore optimizer projects full-rank gradients, but a SwitchLoRA model trains low-rank factors: use "
            "torch.optim.AdamW (optim='adamw_torch') with SwitchLoRA"
        )


class SwitchLoRAStepper:
    """Runs SwitchLoRA's switches around every optimizer step (module docstring).

    Args:
        model: a model holding a ``SwitchLoRAModel`` (e.g. from ``get_peft_model(model, SwitchLoRAConfig(...))``).
        optimizer: the optimizer over the model's trainable parameters (it must hold the factors).
        total_steps: T, the run's optimizer steps (the schedule's descent is relative to it).
        global_step: optimizer steps already taken (when resuming).
    """

    def __init__(self, model: nn.Module, optimizer, total_steps: int, *, global_step: int = 0) -> None:
        switch = find_switchlora_model(model)
        if switch is None:
            raise ValueError("SwitchLoRAStepper needs a model built with get_peft_model(model, SwitchLoRAConfig(...))")
        refuse_sharded(
            switch.parameters(), "SwitchLoRA", "its switches swap rows of A and columns of B across the row shards"
        )
        self.switch = switch
        self.adapter_name = switch.active_adapters[0]
        self.config = switch.peft_config[self.adapter_name]
        self.schedule = SwitchSchedule.from_config(self.config, total_steps)
        self.layers = [layer for _, layer in switch.switchlora_layers() if self.adapter_name in layer.switchlora_A]
        for layer in self.layers:  # pools beside the factors unless offloaded (the model may have moved since)
            layer.switchlora_pool[self.adapter_name].place(layer.switchlora_A[self.adapter_name].weight.device)
        self.optimizer = optimizer
        self.global_step = global_step
        check_optimizer(optimizer)
        self._check_optimizer_holds_factors()
        self.own_bias_correction = is_torch_adam(optimizer)
        if not self.own_bias_correction:
            logger.warning(
                "SwitchLoRA with %s: switched vectors get their per-entry moments zeroed, but their step counters "
                "stay the optimizer's shared ones (per-vector bias correction needs torch.optim.Adam/AdamW)",
                type(unwrap_optimizer(optimizer)).__name__,
            )
        self._redo: list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor, torch.Tensor, int]] = []

    def _check_optimizer_holds_factors(self) -> None:
        held = {id(p) for group in unwrap_optimizer(self.optimizer).param_groups for p in group["params"]}
        missing = sum(id(p) not in held for p in self.switch.factor_parameters(self.adapter_name))
        if missing:
            raise ValueError(
                f"the optimizer does not hold {missing} of the SwitchLoRA factors it must train; build it after "
                "get_peft_model from the parameters with requires_grad=True"
            )

    # ---- one step -------------------------------------------------------------------------------------------

    @torch.no_grad()
    def before_optimizer_step(self, global_step: int | None = None) -> dict[str, Any] | None:
        """Switch, freeze and reset for optimizer step t = ``global_step`` (steps completed so far); call after
        gradient clipping, before ``optimizer.step()``. Returns the ``switchlora_switch`` event, or None when no
        vector was switched."""
        if global_step is not None:
            self.global_step = global_step
        self._redo = []
        factors = self.switch.factor_parameters(self.adapter_name)
        if factors and all(p.grad is None for p in factors):
            # The update is skipped (gradients dropped, e.g. by hf_pept's divergence guard): as in the authors' loop,
            # which switches only before an update it makes, nothing is switched and no freeze counts down.
            return None
        step, name, n = self.global_step, self.adapter_name, self.config.freeze_steps
        draws = self.schedule.draws(step, len(self.layers), self.config.switch_seed).tolist()
        vectors = layers = 0
        for layer, u in zip(self.layers, draws):
            count = self.schedule.switches(step, layer.r[name], u)
            if count == 0:
                continue
            lora_a, lora_b = layer.switchlora_A[name].weight, layer.switchlora_B[name].weight
            pool = layer.switchlora_pool[name]
            rows = layer.switch_rows_of_A(name, count, n)
            self._restart(lora_b, dim=1, index=rows, reset_steps=pool.reset_step_B)
            columns = layer.switch_columns_of_B(name, count, n)
            self._restart(lora_a, dim=0, index=columns, reset_steps=pool.reset_step_A)
            switched = rows.numel() + columns.numel()
            vectors += switched
            layers += switched > 0
        for layer in self.layers:
            layer.mask_frozen_gradients(name)
        if self.own_bias_correction:
            self._redo = self._young_vectors()
        return {"event": "switchlora_switch", "vectors": vectors, "layers": layers} if vectors else None

    @torch.no_grad()
    def after_optimizer_step(self) -> None:
        """Redo the last update of vectors whose moments restarted with their own Adam step counts; call right
        after ``optimizer.step()``."""
        for param, dim, index, before, steps, shared in self._redo:
            if adam_step_count(self.optimizer, param) != shared + 1:
                continue  # the step was skipped (e.g. an fp16 overflow): nothing to redo
            redo_adam_update_(self.optimizer, param, dim, index, before, steps)
        self._redo = []
        self.global_step += 1

    def _restart(self, param: nn.Parameter, dim: int, index: torch.Tensor, reset_steps: torch.Tensor) -> None:
        """Zero the moments of ``param``'s slices ``index`` along ``dim``; remember the step of the restart."""
        if index.numel() == 0:
            return
        shape = [1, 1]
        shape[dim] = param.shape[dim]
        where = torch.zeros(shape, dtype=torch.bool)
        where.view(-1)[index] = True
        reset_optimizer_state(self.optimizer, [param], "zero", where=where)
        reset_steps[index] = adam_step_count(self.optimizer, param) if self.own_bias_correction else 0

    def _young_vectors(self) -> list[tuple[nn.Parameter, int, torch.Tensor, torch.Tensor, torch.Tensor, int]]:
        """(param, dim, index, slices before the step, their own step counts, shared count) of the vectors whose
        own bias correction differs from the optimizer's shared one."""
        redo = []
        name = self.adapter_name
        for layer in self.layers:
            pool = layer.switchlora_pool[name]
            for param, dim, reset_steps in (
                (layer.switchlora_A[name].weight, 0, pool.reset_step_A),
                (layer.switchlora_B[name].weight, 1, pool.reset_step_B),
            ):
                if not bool((reset_steps > 0).any()):
                    continue
                shared = adam_step_count(self.optimizer, param)
                if shared == 0:
                    continue  # the moments do not exist yet: fresh for every vector alike
                own = shared + 1 - reset_steps
                needed = own_bias_correction_needed(own, shared + 1, param_group_of(self.optimizer, param)["betas"])
                index = torch.nonzero(needed & (reset_steps > 0)).flatten()
                if index.numel():
                    before = param.index_select(dim, index.to(param.device)).clone()
                    redo.append((param, dim, index, before, own[index], shared))
        return redo

    def state_dict(self) -> dict[str, int]:
        return {"global_step": self.global_step}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.global_step = int(state_dict["global_step"])
