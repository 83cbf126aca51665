"""What our optimizers and tuners need to know about FSDP2-sharded (DTensor) parameters.

torch's ``fully_shard`` (FSDP2) turns every parameter into a ``DTensor`` on a 1-D device mesh with placement
``Shard(0)``: rank i holds a contiguous block of rows (``torch.chunk`` of dim 0, so the last ranks may hold fewer
rows, or none). The helpers here let the optimizer work on the rank's own rows (``to_local()``) so that DTensor never
redistributes (all-gathers) behind our back, and put new state tensors back into the parameter's layout so that
``torch.distributed.checkpoint`` saves each rank's rows once.

Everything is a no-op for plain tensors: :func:`local` returns its argument itself, so single-process code that goes
through these helpers runs exactly the ops it ran before.
"""

from __future__ import annotations

import torch

try:  # torch >= 2.4
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
except ImportError:  # pragma: no cover - torch builds without distributed
    DTensor = Shard = distribute_tensor = None


def is_dtensor(tensor: object) -> bool:
    return DTensor is not None and isinstance(tensor, DTensor)


def is_row_sharded(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is FSDP2's layout: a DTensor on a 1-D mesh, placed ``Shard(0)``."""
    return is_dtensor(tensor) and tuple(tensor.placements) == (Shard(0),)


def check_row_sharded(tensor: torch.Tensor, what: str) -> None:
    """ValueError for a DTensor in any layout other than FSDP2's (1-D mesh, ``Shard(0)``)."""
    if is_dtensor(tensor) and not is_row_sharded(tensor):
        raise ValueError(
            f"{what} supports DTensor parameters sharded by rows on a 1-D mesh (fully_shard's Shard(0)); got "
            f"placements {tuple(tensor.placements)} for a {tuple(tensor.shape)} parameter. HSDP (2-D meshes) and "
            "tensor parallelism are not supported."
        )


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (shares its storage: in-place ops update the parameter); a plain tensor as is."""
    return tensor.to_local() if is_dtensor(tensor) else tensor


def local_rows(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The rows of ``full`` (the global value, identical on every rank) that this rank holds of DTensor ``like``.

    No communication: every rank cuts its own block (``distribute_tensor(..., src_data_rank=None)``).
    """
    return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None).to_local()


def shard_like(local_tensor: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Wrap this rank's rows ``local_tensor`` (rows of ``like``'s shard × any columns) as a DTensor in ``like``'s
    layout, without communication or copy (the DTensor's local tensor is ``local_tensor`` itself)."""
    global_shape = (like.shape[0], *local_tensor.shape[1:])
    stride = torch.empty(global_shape, device="meta").stride()
    return DTensor.from_local(
        local_tensor, like.device_mesh, like.placements, run_check=False, shape=global_shape, stride=stride
    )


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor on every rank (one all-gather); a plain tensor as is."""
    return tensor.full_tensor() if is_dtensor(tensor) else tensor


def gathered_state(state: dict) -> dict:
    """``state`` with every DTensor replaced by its whole value (one all-gather each); ``state`` itself when it holds
    no DTensor. Pair with :func:`keep_own_rows_` to write changes back."""
    if not any(is_dtensor(value) for value in state.values()):
        return state
    return {key: gathered(value) for key, value in state.items()}


def keep_own_rows_(state: dict, whole: dict) -> None:
    """Copy this rank's rows of each whole value in ``whole`` into the DTensors of ``state`` (no communication)."""
    if whole is state:
        return
    for key, value in state.items():
        if is_dtensor(value):
            value.to_local().copy_(local_rows(whole[key], value))


def refuse_sharded(params, method: str, why: str) -> None:
    """ValueError when any of ``params`` is a DTensor: for the methods whose periodic surgery needs whole tensors."""
    if any(is_dtensor(p) for p in params):
        raise ValueError(
            f"{method} does not run on FSDP2-sharded (DTensor) parameters: {why}; train it in one process or with "
            "DDP (GaLore, Fira and ReLoRA run on FSDP2)"
        )


def process_group_of(tensor: torch.Tensor):
    """The process group a row-sharded DTensor is sharded over."""
    return tensor.device_mesh.get_group()


__all__ = [
    "DTensor",
    "check_row_sharded",
    "gathered",
    "gathered_state",
    "is_dtensor",
    "is_row_sharded",
    "keep_own_rows_",
    "local",
    "local_rows",
    "process_group_of",
    "refuse_sharded",
    "shard_like",
]
