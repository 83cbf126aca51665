"""DDP (2 CPU processes, gloo, via accelerate launch) gives the single-process losses of the doubled batch, and
every rank holds the same projectors (the randomized sketch is seeded from parameter and step, not from rank)."""

import json
import os
import runpy
import subprocess
import sys

import pytest
import torch

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ddp_galore_run.py")
# accelerate 1.x runs `--cpu` with its single-process launcher; its multi-process (torchrun) launcher is the
# `--multi_gpu` one, which TrainingArguments(use_cpu=True) turns into gloo processes on the CPU.
LAUNCH = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
LAUNCH += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]


def _env():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["CUDA_VISIBLE_DEVICES"] = ""  # CPU processes even on a GPU machine
    return env


def test_two_process_ddp_matches_one_process_with_doubled_batch(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    single.mkdir()
    ddp.mkdir()
    two = subprocess.Popen(
        [sys.executable, *LAUNCH, SCRIPT, str(ddp), "2"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    threads = torch.get_num_threads()
    try:
        run_single = runpy.run_path(SCRIPT)["main"]  # the one-process reference runs here meanwhile
        run_single(str(single), 4)
    finally:
        torch.set_num_threads(threads)
    out_two = two.communicate(timeout=300)[0].decode(errors="replace")
    assert two.returncode == 0, out_two[-3000:]

    losses_one = json.loads((single / "losses.json").read_text())
    losses_two = json.loads((ddp / "losses.json").read_text())
    assert sorted(losses_one) == sorted(losses_two) and len(losses_one) == 6
    for step, loss in losses_one.items():
        # fp tolerance: the all-reduced gradient differs from the one-process one by rounding, and a projector
        # refresh (steps 1 and 4) re-amplifies that through the near-degenerate singular values at the cut
        assert losses_two[step] == pytest.approx(loss, rel=1e-4), step

    rank0 = torch.load(ddp / "projectors_rank0.pt", weights_only=True)
    rank1 = torch.load(ddp / "projectors_rank1.pt", weights_only=True)
    reference = torch.load(single / "projectors_rank0.pt", weights_only=True)
    assert len(rank0) == len(rank1) == len(reference) == 14
    for a, b, c in zip(rank0, rank1, reference):
        assert torch.equal(a, b)
        # same subspace as the single process (the gradients agree to fp rounding)
        torch.testing.assert_close(a @ a.t(), c @ c.t(), rtol=0, atol=1e-3)
