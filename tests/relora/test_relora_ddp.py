"""ReLoRA under DDP (2 CPU gloo processes via accelerate launch): every rank re-initialises identical factors.

accelerate's ``--cpu`` launcher starts one process per machine unless given an MPI hostfile, so the two ranks come
from its torchrun path (``--multi_gpu``) with CUDA hidden: torchrun spawns them and they join a gloo group on CPU.
"""

import os
import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("ddp_relora_run.py")


def test_two_gloo_ranks_hold_identical_factors_after_merges(tmp_path):
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
        assert [e for e in rank["events"] if e[1] == "relora_merge"] == [(3, "relora_merge"), (6, "relora_merge")]
    params_0, params_1 = ranks[0]["params"], ranks[1]["params"]
    assert params_0.keys() == params_1.keys() and any("relora_A" in name for name in params_0)
    for name in params_0:
        assert torch.equal(params_0[name], params_1[name]), name
    # Step 7 ran at LR 0 (the jag), so B is still the zero of the re-initialisation at step 6.
    assert all(torch.count_nonzero(t) == 0 for name, t in params_0.items() if "relora_B" in name)
