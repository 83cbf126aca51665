"""A sharded GaLore + Fira run saved with torch.distributed.checkpoint (get_state_dict / dcp.save) and resumed in
new processes (dcp.load / set_state_dict) continues the uninterrupted run's losses exactly."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fsdp_launch import launch_two_fsdp_ranks  # noqa: E402

SCRIPT = HERE / "fsdp_checkpoint_run.py"


def test_sharded_checkpoint_resumes_exactly(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "resume").mkdir()
    full = launch_two_fsdp_ranks_in(tmp_path, "full")
    resumed = launch_two_fsdp_ranks_in(tmp_path, "resume")
    # each rank saved only its own rows of the moments (plus the replicated projectors, written once)
    assert (tmp_path / "checkpoint" / ".metadata").exists()
    for before, after in zip(full, resumed):
        assert sorted(after["losses"]) == [str(s) for s in range(4, 8)]
        for step, loss in after["losses"].items():
            assert loss == before["losses"][step], step  # bit for bit, the refresh at step 6 included
        assert after["galore_steps"] == before["galore_steps"] == [7]


def launch_two_fsdp_ranks_in(tmp_path, phase):
    """Both phases share ``tmp_path`` (the checkpoint), each writes its payloads to its own folder."""
    return launch_two_fsdp_ranks(SCRIPT, tmp_path, phase, results=tmp_path / phase)
