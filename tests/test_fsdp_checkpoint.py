"""A sharded run saved with torch.distributed.checkpoint (get_state_dict / dcp.save) and resumed in new processes
(dcp.load / set_state_dict) continues the uninterrupted run's losses exactly: GaLore + Fira (a projector refresh
after the resume) and ReLoRA (a merge and optimizer reset after the resume)."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fsdp_launch import launch_two_fsdp_ranks  # noqa: E402

SCRIPT = HERE / "fsdp_checkpoint_run.py"


@pytest.mark.parametrize("method", ["galore_fira", "relora"])
def test_sharded_checkpoint_resumes_exactly(tmp_path, method):
    for phase in ("full", "resume"):
        (tmp_path / phase).mkdir()
    full = launch_two_fsdp_ranks(SCRIPT, tmp_path, method, "full", results=tmp_path / "full")
    # each rank wrote only its rows of the sharded tensors
    assert (tmp_path / "checkpoint" / ".metadata").exists()
    resumed = launch_two_fsdp_ranks(SCRIPT, tmp_path, method, "resume", results=tmp_path / "resume")
    assert len(set(full[0]["losses"].values())) == 8  # it trains
    for before, after in zip(full, resumed):
        assert sorted(after["losses"]) == [str(s) for s in range(4, 8)]
        for step, loss in after["losses"].items():
            assert loss == before["losses"][step], step  # bit for bit, across the refresh / merge after step 6
