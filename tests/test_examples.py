"""Each example runs as a user would run it (a subprocess), for a few steps on the tiny model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "hf_pept_cache"
    # The scripts' own commands (python, accelerate) resolve as in an activated environment, even when the tests
    # run through .venv/bin/python with the system PATH (as `make test` does).
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {
        **os.environ,
        "PATH": path,
        "HF_PEPT_CACHE": str(cache),
        "TOKENIZERS_PARALLELISM": "false",
        "CUDA_VISIBLE_DEVICES": "",
    }


def _run(command, env, cwd):
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


@pytest.mark.parametrize("script", ["pretrain_galore.py", "plain_pytorch_loop.py"])
def test_galore_examples(script, env, tmp_path):
    out = _run([sys.executable, str(EXAMPLES / script), "--max_steps", "6", "--rank", "8"], env, tmp_path)
    assert "held-out perplexity:" in out


def test_relora_example_merges(env, tmp_path):
    out = _run(
        [sys.executable, str(EXAMPLES / "pretrain_relora.py"), "--max_steps", "8", "--rank", "8"], env, tmp_path
    )
    merges = out.split("merges at steps ")[1].split("]")[0]
    assert merges.strip("[ ") != "", out[-1000:]


def test_ddp_example_runs_two_processes(env, tmp_path):
    out = _run(["bash", str(EXAMPLES / "ddp_accelerate.sh"), "--max_steps", "3", "--rank", "8"], env, tmp_path)
    assert "(2 training process(es))" in out


def test_fsdp2_config_is_one_accelerate_reads():
    # accelerate applies FSDP only on accelerators, so the CPU suite checks the config itself: accelerate loads it
    # (unknown top-level keys are an error there) and every fsdp_config key is an option of `accelerate launch`.
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(EXAMPLES / "fsdp2.yaml"))
    assert config.distributed_type == "FSDP" and config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    assert config.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    options = {action.dest for action in launch_command_parser()._actions}
    assert set(config.fsdp_config) <= options
