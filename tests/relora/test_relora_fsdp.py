"""ReLoRA on FSDP2 (fully_shard per decoder layer + root, 2 gloo ranks, plain loop with torch AdamW and
ReLoRAStepper) against the single-process run on the same global batches, across two merges and optimizer resets."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fsdp_launch import launch_two_fsdp_ranks  # noqa: E402

SCRIPT = HERE / "fsdp_relora_run.py"
FACTORS = 28  # A and B of 7 projections × 2 layers


@pytest.mark.parametrize("reset", ["magnitude", "random"])
def test_fsdp_merges_and_resets_like_single_process(tmp_path, reset):
    ranks = launch_two_fsdp_ranks(SCRIPT, tmp_path, reset)
    reference = ranks[0]["reference"]
    assert ranks[0]["losses"] == pytest.approx(reference["losses"], rel=1e-5)  # merges after steps 3 and 6
    assert ranks[1]["losses"] == ranks[0]["losses"]
    # the reset pruned the same entries, counted over the whole (gathered) moments
    assert ranks[0]["events"] == ranks[1]["events"] == reference["events"]
    assert [e["event"] for e in reference["events"]] == ["relora_merge", "optimizer_reset"] * 2
    for rank in ranks:
        assert rank["collectives"] == [0] * 7  # torch AdamW on the local shards
        # a merge gathers each A (r×in); the reset gathers each factor's two moments
        assert rank["merge_collectives"] == [FACTORS // 2 + 2 * FACTORS] * 2
        for key in ("exp_avg", "exp_avg_sq"):
            assert rank["state_bytes"][key] * 2 == reference["state_bytes"][key]
