"""ReLoRA under DDP (2 CPU gloo processes via accelerate launch): every rank re-initialises identical factors.

accelerate's ``--cpu`` launcher starts one process per machine unless given an MPI hostfile, so the two ranks come
from its torchrun path (``--multi_gpu``) with CUDA hidden: torchrun spawns them and they join a gloo group on CPU.
"""

from pathlib import Path

import torch
from ddp_launch import launch_two_gloo_ranks

SCRIPT = Path(__file__).with_name("ddp_relora_run.py")


def test_two_gloo_ranks_hold_identical_factors_after_merges(tmp_path):
    ranks = launch_two_gloo_ranks(SCRIPT, tmp_path)
    for rank in ranks:
        assert [e for e in rank["events"] if e[1] == "relora_merge"] == [(3, "relora_merge"), (6, "relora_merge")]
    params_0, params_1 = ranks[0]["params"], ranks[1]["params"]
    assert params_0.keys() == params_1.keys() and any("relora_A" in name for name in params_0)
    for name in params_0:
        assert torch.equal(params_0[name], params_1[name]), name
    # Step 7 ran at LR 0 (the jag), so B is still the zero of the re-initialisation at step 6.
    assert all(torch.count_nonzero(t) == 0 for name, t in params_0.items() if "relora_B" in name)
