"""GaLore and Fira on FSDP2 (fully_shard per decoder layer + root, 2 gloo ranks, plain loop) against the
single-process run on the same global batches: same losses, no collective in an ordinary optimizer step, and half
of the single-process moments on each rank (plus the replicated projectors)."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fsdp_launch import launch_two_fsdp_ranks  # noqa: E402

SCRIPT = HERE / "fsdp_galore_run.py"
REFRESH_STEPS = [0, 3, 6]
PROJECTED_WEIGHTS = 14  # 7 projections × 2 layers


_RUNS: dict[str, list[dict]] = {}


def _run(tmp_path, case):
    """The two ranks' payloads of ``case`` (each case is launched once per session)."""
    if case not in _RUNS:
        tmp_path.mkdir(parents=True, exist_ok=True)
        ranks = launch_two_fsdp_ranks(SCRIPT, tmp_path, case)
        assert [r["world_size"] for r in ranks] == [2, 2]
        _RUNS[case] = ranks
    return _RUNS[case]


def _check_state_halved(ranks):
    reference = ranks[0]["reference"]["state_bytes"]
    for key in ("exp_avg", "exp_avg_sq"):  # moments of projected and full-rank parameters, row-sharded
        assert ranks[0]["state_bytes"][key] + ranks[1]["state_bytes"][key] == reference[key]
        assert ranks[0]["state_bytes"][key] == ranks[1]["state_bytes"][key] == reference[key] // 2
    # the projectors Q (n×r) are replicated: each rank holds all of them
    assert ranks[0]["state_bytes"]["projector"] == ranks[1]["state_bytes"]["projector"] == reference["projector"]


@pytest.mark.parametrize("case", ["galore", "fira"])
def test_fsdp_matches_single_process(tmp_path, case):
    ranks = _run(tmp_path, case)
    losses, reference = ranks[0]["losses"], ranks[0]["reference"]["losses"]
    assert len(losses) == len(reference) == 8
    assert losses == pytest.approx(reference, rel=1e-4)  # refreshes at steps 0, 3, 6 included
    assert ranks[1]["losses"] == losses
    assert ranks[0]["projector_updates"] == REFRESH_STEPS
    for rank in ranks:
        for step, count in enumerate(rank["collectives"]):
            if step in REFRESH_STEPS:
                # a refresh all-gathers each projected gradient once (+ Fira's one all-reduce of residual norms)
                assert count == PROJECTED_WEIGHTS + (case == "fira"), step
            else:
                # an ordinary step: nothing for GaLore, Fira's one all-reduce of the residual norms
                assert count == (case == "fira"), step
    _check_state_halved(ranks)


def test_unequal_shards_match_single_process(tmp_path):
    ranks = _run(tmp_path, "fira_uneven_shards")
    assert ranks[0]["losses"] == pytest.approx(ranks[0]["reference"]["losses"], rel=1e-4)
    reference = ranks[0]["reference"]["state_bytes"]
    for key in ("exp_avg", "exp_avg_sq"):
        assert ranks[0]["state_bytes"][key] > ranks[1]["state_bytes"][key]  # rank 0 holds 33 of 65 rows
        assert ranks[0]["state_bytes"][key] + ranks[1]["state_bytes"][key] == reference[key]
    assert (
        ranks[0]["collectives"]
        == ranks[1]["collectives"]
        == [PROJECTED_WEIGHTS + 1, 1, 1] * 2 + [PROJECTED_WEIGHTS + 1]
    )


def test_optimizer_built_before_sharding_takes_the_sharded_path(tmp_path):
    # The Trainer builds the optimizer on the unsharded model under FSDP2, then accelerate swaps the sharded
    # parameters into its param groups: the steps must detect them and run exactly as when built after sharding.
    swapped = _run(tmp_path, "galore_built_before_sharding")
    built_after = _run(tmp_path / "after", "galore")
    for a, b in zip(swapped, built_after):
        assert a["losses"] == b["losses"]
        assert a["collectives"] == b["collectives"]
        assert a["state_bytes"] == b["state_bytes"]


def test_fsdp_randomized_refresh_matches_single_process(tmp_path):
    ranks = _run(tmp_path, "galore_randomized")
    losses, reference = ranks[0]["losses"], ranks[0]["reference"]["losses"]
    # Up to the second refresh the curves agree to rounding. The randomized range finder then amplifies the
    # rounding difference of the two runs' gradients (reduce-scatter vs one batch) more than the SVD does:
    # measured 1.3e-4 relative at the last steps of this tiny, flat-spectrum model.
    assert losses[:4] == pytest.approx(reference[:4], rel=1e-5)
    assert losses == pytest.approx(reference, rel=5e-4)
    assert ranks[0]["collectives"] == ranks[1]["collectives"] == [PROJECTED_WEIGHTS, 0, 0] * 2 + [PROJECTED_WEIGHTS]
    _check_state_halved(ranks)


def test_what_fsdp_refuses_says_so_in_one_line(tmp_path):
    refusals = _run(tmp_path, "galore")[0]["refusals"]
    assert sorted(refusals) == ["adafactor", "adamw8bit", "layerwise", "left_projection"]
    assert "proj_type='left'" in refusals["left_projection"] and "'right'" in refusals["left_projection"]
    assert "FSDP2" in refusals["layerwise"] and "galore_adamw" in refusals["layerwise"]
    for name in ("adamw8bit", "adafactor"):
        assert "FSDP2-sharded (DTensor)" in refusals[name] and "galore_adamw" in refusals[name]
    assert all("\n" not in message for message in refusals.values())
