"""SST under DDP (2 CPU gloo processes via accelerate launch): every rank samples the same vectors and holds the same
U, Σ, V after resamples and a re-SVD, with the global RNG differing between ranks.

accelerate's ``--cpu`` launcher starts one process per machine unless given an MPI hostfile, so the two ranks come
from its torchrun path (``--multi_gpu``) with CUDA hidden: torchrun spawns them and they join a gloo group on CPU.
"""

from pathlib import Path

import torch
from ddp_launch import launch_two_gloo_ranks

SCRIPT = Path(__file__).with_name("ddp_sst_run.py")


def test_two_gloo_ranks_sample_the_same_vectors_and_hold_identical_factors(tmp_path):
    ranks = launch_two_gloo_ranks(SCRIPT, tmp_path)
    for rank in ranks:
        assert rank["events"] == [(2, "sst_resample"), (4, "sst_resvd"), (4, "sst_resample")]
    # The seeded draws agree without any broadcast (the broadcast in SSTModel.resample only guards against drift).
    assert all(torch.equal(a, b) for a, b in zip(ranks[0]["draws"], ranks[1]["draws"]))
    tensors_0, tensors_1 = ranks[0]["tensors"], ranks[1]["tensors"]
    assert tensors_0.keys() == tensors_1.keys() and any("sst_active_index" in name for name in tensors_0)
    for name in tensors_0:
        assert torch.equal(tensors_0[name], tensors_1[name]), name
