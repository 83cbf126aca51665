"""SST under DDP (2 CPU gloo processes via accelerate launch): every rank samples the same vectors and holds the same
U, Σ, V after resamples and a re-SVD, with the global RNG differing between ranks.

accelerate's ``--cpu`` launcher starts one process per machine unless given an MPI hostfile, so the two ranks come
from its torchrun path (``--multi_gpu``) with CUDA hidden: torchrun spawns them and they join a gloo group on CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_sst_run.py")


def test_two_gloo_ranks_sample_the_same_vectors_and_hold_identical_factors(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert ranks[0]["world_size"] == 2
    for rank in ranks:
        assert rank["events"] == [(2, "sst_resample"), (4, "sst_resvd"), (4, "sst_resample")]
    # The seeded draws agree without any broadcast (the broadcast in SSTModel.resample only guards against drift).
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["draws"], ranks[1]["draws"]))
    tensors_0, tensors_1 = ranks[0]["tensors"], ranks[1]["tensors"]
    assert tensors_0.keys() == tensors_1.keys() and any("sst_active_index" in name for name in tensors_0)
    for name in tensors_0:
        assert torch.equal(tensors_0[name], tensors_1[name]), name
