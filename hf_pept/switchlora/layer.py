"""The SwitchLoRA-adapted linear layer: LoRA's forward plus candidate pools and the switch of single vectors.

Forward (LoRA, Hu et al. 2021, eq. 3):  y = W x + s · B (A x),  s = α / r,  W: m×n (out×in),  B: m×r,  A: r×n.

SwitchLoRA (Zhou et al. 2024, arXiv 2406.06564) keeps, per adapted layer, a pool of C = min(m, n) candidate rows
for A (length n) and C candidate columns for B (length m). The r rows of A always hold r *consecutive* pool slots
(cyclically); a switch of row i takes the slot after the one row i − 1 holds, so each row walks the pool in order
(the authors' "continuous" mode; their random, weighted choice of candidates is not implemented). Switching row i
of A to candidate c keeps the layer's function:

    W ← W + s · B[:, i] (A[i, :] − c),    A[i, :] ← c,    pool[slot of row i] ← old A[i, :]

so W + s·B A is the same before and after, up to rounding (and likewise W ← W + s · (B[:, j] − c′) A[j, :] for a
column of B). The old vector goes back into its slot: pools are swapped, not fixed. At wrap time the factors are
copies of pool slots and W_frozen = W − s·B₀A₀, so the wrapped model computes exactly what the model did.

Init (the authors' code; the paper motivates it by equal-magnitude gradient paths): with g = gain('leaky_relu',
√5) = 1/√3,  std_A = (√m·r / n^{3/2})^{1/4}·√g,  std_B = (r / √(mn))^{1/4}·√g,  uniform on ±√3·std. Then an entry
of s·B A has standard deviation g/√n (that of a default ``nn.Linear`` init) and the two paths of a step,
B·ΔA and ΔB·A, have the same size.

The switching state of a layer (pools, which slot each vector holds, the two pointers, freeze counters and the
optimizer steps at which each vector's moments were last zeroed) lives in a :class:`CandidatePool`. Its tensors are
*not* buffers: ``model.to(device)`` leaves an offloaded pool in host memory and DDP does not broadcast it (every
rank switches identically). They are in the module's ``state_dict`` all the same, so checkpoints and
``save_pretrained`` hold them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..kernels.lora_merge import merge_lora_
from ..tuners import LowRankLinearMixin

_INT = torch.int64


def init_bounds(in_features: int, out_features: int, r: int, mode: str = "switchlora") -> tuple[float, float]:
    """(bound_A, bound_B) of the uniform init (module docstring); ``mode="lora"``: Kaiming-uniform A, zero B."""
    m, n = out_features, in_features
    gain = nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    if mode == "lora":
        std_a, std_b = gain / math.sqrt(n), 0.0
    else:
        std_a = ((math.sqrt(m) * r) / n**1.5) ** 0.25 * math.sqrt(gain)
        std_b = (r / math.sqrt(m * n)) ** 0.25 * math.sqrt(gain)
    return math.sqrt(3.0) * std_a, math.sqrt(3.0) * std_b


class CandidatePool(nn.Module):
    """One adapted layer's switching state; tensors kept outside ``_parameters``/``_buffers`` (module docstring).

    ``candidates_A`` (C×n) and ``candidates_B`` (C×m, B's columns stored as rows); ``slots_A``/``slots_B`` (r): the
    pool slot each row of A / column of B holds; ``pointer_A``/``pointer_B``: the next index to switch (B starts r/2
    ahead, so a row of A and the column of B with the same index are not switched together); ``frozen_A``/
    ``frozen_B`` (r): steps each vector stays frozen; ``reset_step_A``/``reset_step_B`` (r): the optimizer's step
    count when the vector's moments were last zeroed (0 = never), for its own Adam bias correction.
    """

    TENSORS = (
        "candidates_A", "candidates_B", "slots_A", "slots_B", "pointer_A", "pointer_B",
        "frozen_A", "frozen_B", "reset_step_A", "reset_step_B",
    )  # fmt: skip

    def __init__(self, candidates_A: torch.Tensor, candidates_B: torch.Tensor, r: int, offload: bool) -> None:
        super().__init__()
        size = candidates_A.shape[0]
        self.offload = offload
        self.candidates_A = candidates_A
        self.candidates_B = candidates_B
        self.slots_A = torch.arange(size - r, size, dtype=_INT)
        # B's window starts at index r // 2: the column there holds slot C − r, the next ones follow cyclically.
        self.slots_B = size - r + (torch.arange(r, dtype=_INT) - r // 2) % r
        self.pointer_A = torch.tensor(0, dtype=_INT)
        self.pointer_B = torch.tensor(r // 2, dtype=_INT)
        self.frozen_A = torch.zeros(r, dtype=_INT)
        self.frozen_B = torch.zeros(r, dtype=_INT)
        self.reset_step_A = torch.zeros(r, dtype=_INT)
        self.reset_step_B = torch.zeros(r, dtype=_INT)

    @property
    def size(self) -> int:
        return self.candidates_A.shape[0]

    def host_bytes(self) -> int:
        """Bytes of the pools (when offloaded) and counters kept in host memory."""
        tensors = [getattr(self, name) for name in self.TENSORS]
        return sum(t.numel() * t.element_size() for t in tensors if t.device.type == "cpu")

    def place(self, device: torch.device) -> None:
        """Pools beside the factors unless offloaded; called before each switch (a no-op once in place)."""
        target = torch.device("cpu") if self.offload else device
        if self.candidates_A.device != target:
            self.candidates_A = self.candidates_A.to(target)
            self.candidates_B = self.candidates_B.to(target)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        for name in self.TENSORS:
            destination[prefix + name] = getattr(self, name).detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors):
        for name in self.TENSORS:
            key = prefix + name
            if key not in state_dict:
                missing_keys.append(key)
                continue
            value, current = state_dict[key], getattr(self, name)
            if tuple(value.shape) != tuple(current.shape):
                errors.append(
                    f"size mismatch for {key}: copying a tensor of shape {tuple(value.shape)}, the SwitchLoRA layer "
                    f"has {tuple(current.shape)} (a different r or layer size)"
                )
                continue
            current.copy_(value.to(device=current.device, dtype=current.dtype))
        if strict:
            known = {prefix + name for name in self.TENSORS}
            unexpected_keys.extend(k for k in state_dict if k.startswith(prefix) and k not in known)

    def extra_repr(self) -> str:
        where = "host" if self.offload else "device"
        return f"candidates={self.size}, r={self.slots_A.numel()}, in {where} memory"


def _leading_unfrozen(frozen: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """The indices start, start + 1, ... (mod r), at most ``count``, up to the first frozen one."""
    r = frozen.numel()
    positions = (start + torch.arange(min(count, r), dtype=_INT)) % r
    free = torch.cumprod((frozen[positions] == 0).to(_INT), 0).bool()
    return positions[free]


class SwitchLoRALayer(LowRankLinearMixin, BaseTunerLayer):
    """State shared by SwitchLoRA layers: one (A, B, dropout, scaling, pool) per adapter name; ΔW, merge, unmerge and
    the LoRA forward come from :class:`~hf_pept.tuners.LowRankLinearMixin`."""

    adapter_layer_names = ("switchlora_A", "switchlora_B")
    lowrank_dropout = "switchlora_dropout"
    other_param_names = ("r", "lora_alpha", "scaling", "switchlora_dropout", "switchlora_pool")

    def __init__(self, base_layer: nn.Module, **kwargs: Any) -> None:
        self.base_layer = base_layer
        self.r: dict[str, int] = {}
        self.lora_alpha: dict[str, float] = {}
        self.scaling: dict[str, float] = {}
        self.switchlora_dropout = nn.ModuleDict({})
        self.switchlora_A = nn.ModuleDict({})
        self.switchlora_B = nn.ModuleDict({})
        self.switchlora_pool = nn.ModuleDict({})
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"SwitchLoRA adapts torch.nn.Linear layers only, got {type(base).__name__}")
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.kwargs = kwargs

    @torch.no_grad()
    def update_layer(
        self,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init: str = "switchlora",
        offload: bool = True,
        generator: torch.Generator | None = None,
    ) -> None:
        """Add adapter ``adapter_name``: pools drawn from ``generator`` (CPU), factors copied from their slots and
        W ← W − s·B₀A₀, so the layer's output is unchanged."""
        size = min(self.in_features, self.out_features)
        if r <= 0:
            raise ValueError(f"r must be a positive integer, got {r!r}")
        if r >= size:
            raise ValueError(
                f"r ({r}) must be below min(in_features, out_features) = {size} of this layer: SwitchLoRA switches "
                "the r active vectors with the other candidates of a pool of that size; lower r"
            )
        self.r[adapter_name] = r
        self.lora_alpha[adapter_name] = lora_alpha
        self.scaling[adapter_name] = lora_alpha / r
        self.switchlora_dropout[adapter_name] = nn.Dropout(p=lora_dropout) if lora_dropout > 0.0 else nn.Identity()
        base = self.get_base_layer()
        weight = base.weight
        dtype = weight.dtype if weight.is_floating_point() else torch.float32
        bound_a, bound_b = init_bounds(self.in_features, self.out_features, r, init)
        candidates_a = torch.empty(size, self.in_features, dtype=dtype).uniform_(
            -bound_a, bound_a, generator=generator
        )
        candidates_b = torch.empty(size, self.out_features, dtype=dtype)
        candidates_b.uniform_(-bound_b, bound_b, generator=generator) if bound_b > 0 else candidates_b.zero_()
        pool = CandidatePool(candidates_a, candidates_b, r, offload)
        lora_a = nn.Linear(self.in_features, r, bias=False, dtype=dtype, device=weight.device)
        lora_b = nn.Linear(r, self.out_features, bias=False, dtype=dtype, device=weight.device)
        lora_a.weight.copy_(candidates_a[pool.slots_A])
        lora_b.weight.copy_(candidates_b[pool.slots_B].T)
        self.switchlora_A[adapter_name] = lora_a
        self.switchlora_B[adapter_name] = lora_b
        self.switchlora_pool[adapter_name] = pool
        pool.place(weight.device)
        if weight.device.type != "meta":
            merge_lora_(weight.data, lora_a.weight, lora_b.weight, -self.scaling[adapter_name])
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters)

    # ---- the switch -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def switch_rows_of_A(self, adapter_name: str, count: int, freeze_steps: int) -> torch.Tensor:
        """Switch up to ``count`` rows of A from ``pointer_A`` on (stopping at a frozen row); freeze the same
        columns of B for ``freeze_steps`` steps. Returns the switched indices (CPU int64)."""
        return self._switch(adapter_name, count, freeze_steps, side="A")

    @torch.no_grad()
    def switch_columns_of_B(self, adapter_name: str, count: int, freeze_steps: int) -> torch.Tensor:
        """Switch up to ``count`` columns of B from ``pointer_B`` on (stopping at a frozen column); freeze the same
        rows of A for ``freeze_steps`` steps. Returns the switched indices (CPU int64)."""
        return self._switch(adapter_name, count, freeze_steps, side="B")

    def _switch(self, adapter_name: str, count: int, freeze_steps: int, side: str) -> torch.Tensor:
        if self.merged:
            raise RuntimeError("unmerge the adapter (peft's unmerge_adapter) before a SwitchLoRA switch")
        pool: CandidatePool = self.switchlora_pool[adapter_name]
        lora_a = self.switchlora_A[adapter_name].weight
        lora_b = self.switchlora_B[adapter_name].weight
        weight = self.get_base_layer().weight
        pool.place(lora_a.device)
        pointer = getattr(pool, f"pointer_{side}")
        slots = getattr(pool, f"slots_{side}")
        own_frozen = getattr(pool, f"frozen_{side}")
        other_frozen = pool.frozen_B if side == "A" else pool.frozen_A
        positions = _leading_unfrozen(own_frozen, int(pointer), count)
        k = positions.numel()
        if k == 0:
            return positions
        r = slots.numel()
        # The window of slots the vectors hold is consecutive: the next one follows the previous index's slot.
        new_slots = (slots[(int(pointer) - 1) % r] + 1 + torch.arange(k, dtype=_INT)) % pool.size
        old_slots = slots[positions]
        candidates = pool.candidates_A if side == "A" else pool.candidates_B
        index = positions.to(lora_a.device)
        new_slots_there, old_slots_there = new_slots.to(candidates.device), old_slots.to(candidates.device)
        incoming = candidates[new_slots_there].to(device=lora_a.device, dtype=lora_a.dtype)
        s = self.scaling[adapter_name]
        if side == "A":
            outgoing = lora_a.index_select(0, index)
            # W ← W + s · B[:, I] (A[I, :] − C_I)
            merge_lora_(weight.data, outgoing - incoming, lora_b.index_select(1, index), s)
            lora_a.index_copy_(0, index, incoming)
        else:
            outgoing = lora_b.index_select(1, index).T
            # W ← W + s · (B[:, J] − C′_J) A[J, :]
            merge_lora_(weight.data, lora_a.index_select(0, index), (outgoing - incoming).T, s)
            lora_b.index_copy_(1, index, incoming.T.contiguous())
        candidates[old_slots_there] = outgoing.to(device=candidates.device, dtype=candidates.dtype)
        slots[positions] = new_slots
        pointer.copy_((pointer + k) % r)
        other_frozen[positions] = freeze_steps
        return positions

    @torch.no_grad()
    def mask_frozen_gradients(self, adapter_name: str) -> int:
        """Zero the gradients of frozen rows of A / columns of B and count their remaining steps down by one;
        returns how many vectors were frozen."""
        pool: CandidatePool = self.switchlora_pool[adapter_name]
        frozen = 0
        for dim, counter, param in (
            (0, pool.frozen_A, self.switchlora_A[adapter_name].weight),
            (1, pool.frozen_B, self.switchlora_B[adapter_name].weight),
        ):
            index = torch.nonzero(counter > 0).flatten()
            if index.numel() == 0:
                continue
            if param.grad is not None:
                param.grad.index_fill_(dim, index.to(param.grad.device), 0.0)
            counter[index] -= 1
            frozen += index.numel()
        return frozen


class Linear(nn.Module, SwitchLoRALayer):
    """``nn.Linear`` with a SwitchLoRA adapter."""

    def __init__(
        self,
        base_layer: nn.Module,
        adapter_name: str,
        r: int,
        lora_alpha: float,
        lora_dropout: float,
        init: str = "switchlora",
        offload: bool = True,
        generator: torch.Generator | None = None,
        **kwargs,
    ) -> None:
        super().__init__()
        SwitchLoRALayer.__init__(self, base_layer, **kwargs)
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha, lora_dropout, init, offload, generator)

    forward = LowRankLinearMixin.lowrank_forward

    def broken_merge_message(self, adapter_name: str) -> str:
        return f"NaNs or infs in the merged weights of adapter {adapter_name!r}; nothing merged"

    def add_scaled_update(self, result: torch.Tensor, update: torch.Tensor, scaling: float) -> torch.Tensor:
        return result + (update * scaling).to(result.dtype)

    def __repr__(self) -> str:
        return "switchlora." + super().__repr__()
