"""SwitchLoRA under DDP (2 CPU gloo processes via accelerate launch): every rank switches the same vectors.

As in the ReLoRA DDP test, the two ranks come from accelerate's torchrun path (``--multi_gpu``) with CUDA hidden.
The pools are not module buffers, so DDP never broadcasts them: the ranks agree because they draw the same k(t)
from (seed, step) and fold the same, identically all-reduced, factors.
"""

from pathlib import Path

import torch
from ddp_launch import launch_two_gloo_ranks

SCRIPT = Path(__file__).with_name("ddp_switchlora_run.py")


def test_two_gloo_ranks_switch_the_same_vectors(tmp_path):
    ranks = launch_two_gloo_ranks(SCRIPT, tmp_path)
    assert ranks[0]["events"] == ranks[1]["events"] and len(ranks[0]["events"]) >= 4
    tensors_0, tensors_1 = ranks[0]["tensors"], ranks[1]["tensors"]
    assert tensors_0.keys() == tensors_1.keys() and any("candidates_A" in name for name in tensors_0)
    for name in tensors_0:
        assert torch.equal(tensors_0[name], tensors_1[name]), name
    # The pools moved: vectors went back into their slots (not the initial window of the last r slots any more).
    assert any(not torch.equal(t, torch.arange(28, 32)) for n, t in tensors_0.items() if n.endswith("slots_A"))
