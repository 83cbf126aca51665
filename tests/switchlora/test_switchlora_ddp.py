"""SwitchLoRA under DDP (2 CPU gloo processes via accelerate launch): every rank switches the same vectors.

As in the ReLoRA DDP test, the two ranks come from accelerate's torchrun path (``--multi_gpu``) with CUDA hidden.
The pools are not module buffers, so DDP never broadcasts them: the ranks agree because they draw the same k(t)
from (seed, step) and fold the same, identically all-reduced, factors.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_switchlora_run.py")


def test_two_gloo_ranks_switch_the_same_vectors(tmp_path):
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", str(SCRIPT), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert ranks[0]["world_size"] == 2
    assert ranks[0]["events"] == ranks[1]["events"] and len(ranks[0]["events"]) >= 4
    tensors_0, tensors_1 = ranks[0]["tensors"], ranks[1]["tensors"]
    assert tensors_0.keys() == tensors_1.keys() and any("candidates_A" in name for name in tensors_0)
    for name in tensors_0:
        assert torch.equal(tensors_0[name], tensors_1[name]), name
    # The pools moved: vectors went back into their slots (not the initial window of the last r slots any more).
    assert any(not torch.equal(t, torch.arange(28, 32)) for n, t in tensors_0.items() if n.endswith("slots_A"))
