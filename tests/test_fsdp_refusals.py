"""Methods not adapted to FSDP2 say so in one line instead of training wrongly on row shards."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fsdp_launch import launch_two_fsdp_ranks  # noqa: E402


def test_switchlora_and_sst_refuse_sharded_parameters(tmp_path):
    for messages in launch_two_fsdp_ranks(HERE / "fsdp_refusals_run.py", tmp_path):
        assert messages["switchlora"].startswith("SwitchLoRA does not run on FSDP2-sharded (DTensor) parameters")
        assert messages["sst"].startswith("SST does not run on FSDP2-sharded (DTensor) parameters")
        assert all("\n" not in m and "DDP" in m for m in messages.values())
