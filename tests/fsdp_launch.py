"""Two-rank FSDP2 runs for the tests: the launcher (test side) and the training boilerplate (rank side).

accelerate and the Trainer apply FSDP only on accelerators, so the CPU tests shard a tiny LLaMA themselves the way
accelerate's FSDP2 plugin does (``fully_shard`` per decoder layer, then the root) and train it in a plain loop on 2
gloo processes started by ``torch.distributed.run``. Each rank writes what it measured to ``<out>/rank<i>.json``
(and tensors to ``<out>/rank<i>.pt``); rank 0 also runs the single-process reference on the whole global batch.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

VOCAB, SEQ, PER_RANK_BATCH, WORLD = 128, 16, 2, 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_fsdp_ranks(script: Path, out: Path, *args: str, results: Path | None = None) -> list[dict]:
    """Run ``script out *args`` on 2 CPU gloo ranks; return the two ranks' JSON payloads (from ``results``,
    default ``out``)."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_port()), str(script), str(out), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")])
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    results = out if results is None else results
    return [json.loads((results / f"rank{i}.json").read_text()) for i in range(2)]


# ---- rank side -------------------------------------------------------------------------------------------------


def init_rank() -> tuple[int, int]:
    """Join the gloo group (one CPU thread per rank); returns (rank, world size)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def tiny_llama(seed: int = 0, intermediate_size: int = 64):
    """A 2-layer LLaMA (hidden 32, MLP 64, 4 heads): every projected dimension divides by 2, so shards are even
    (an odd ``intermediate_size`` gives the MLP's gate and up projections shards of unequal size)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=intermediate_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=SEQ,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def shard(model, decoder_layers) -> None:
    """accelerate's FSDP2 wrapping (TRANSFORMER_BASED_WRAP on the decoder layer class): each layer, then the root."""
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers:
        fully_shard(layer)
    fully_shard(model)


def global_batch(step: int) -> torch.Tensor:
    """The token ids of optimizer step ``step`` for all ranks together (WORLD × PER_RANK_BATCH sequences)."""
    generator = torch.Generator().manual_seed(1000 + step)
    return torch.randint(0, VOCAB, (WORLD * PER_RANK_BATCH, SEQ), generator=generator)


def rank_batch(step: int, rank: int) -> torch.Tensor:
    return global_batch(step)[rank * PER_RANK_BATCH : (rank + 1) * PER_RANK_BATCH]


def mean_over_ranks(value: torch.Tensor) -> float:
    """The global mean of a per-rank mean loss (equal token counts on every rank)."""
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value)
    return float(value) / dist.get_world_size()


class CollectiveCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the collectives issued while active: c10d ops (``torch.distributed.all_reduce`` ...) and the
    functional collectives DTensor redistributes with (waits and autograd wrappers are not collectives)."""

    _NAMESPACES = ("c10d", "_c10d_functional", "c10d_functional", "_dtensor")

    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        if func.namespace in self._NAMESPACES and "wait" not in name and "_wrap_tensor" not in name:
            self.names.append(name)
        return func(*args, **(kwargs or {}))


def state_bytes(optimizer) -> dict[str, int]:
    """Bytes of optimizer state this rank holds, per state key (a DTensor counts its local shard only)."""
    from hf_pept.fsdp import local

    inner = getattr(optimizer, "optimizer", optimizer)
    totals: dict[str, int] = {}
    for state in inner.state.values():
        for key, value in state.items():
            if torch.is_tensor(value):
                value = local(value)
                totals[key] = totals.get(key, 0) + value.numel() * value.element_size()
    return totals


def write_rank(out: Path, rank: int, payload: dict) -> None:
    (Path(out) / f"rank{rank}.json").write_text(json.dumps(payload))
