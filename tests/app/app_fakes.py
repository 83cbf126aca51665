"""Stand-ins for the CLI's dataclasses, its `train` command and the memory estimate, so the app's own logic is
tested without training anything."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Literal

from hf_pept.app import form
from hf_pept.app.schema import Schema, Section

METHODS = ("full", "lora", "relora", "galore")


@dataclass
class FakeRunArguments:
    method: Literal["full", "lora", "relora", "galore"] = field(default="galore", metadata={"help": "method"})
    model: str = field(default="tiny", metadata={"help": "model size or path"})
    dataset: str = field(default="builtin", metadata={"help": "dataset name or file"})
    learning_rate: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps"})
    output_dir: str = field(default="out", metadata={"help": "run folder"})

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}")


@dataclass
class FakeGaLore:
    rank: int | None = field(default=None, metadata={"help": "rank (empty: the method's default)"})
    update_proj_gap: int = field(default=200, metadata={"help": "T"})

    def __post_init__(self):
        if self.rank is not None and self.rank < 1:
            raise ValueError(f"GaLore `rank` must be >= 1, got {self.rank}")


@dataclass
class FakeReLoRA:
    relora_steps: int = field(default=1000, metadata={"help": "T"})


def fake_schema() -> Schema:
    run = Section("Run", FakeRunArguments, (), form.field_specs(FakeRunArguments, skip=("output_dir",)))
    sections = [
        Section("GaLore", FakeGaLore, ("galore",), form.field_specs(FakeGaLore)),
        Section("ReLoRA", FakeReLoRA, ("relora",), form.field_specs(FakeReLoRA)),
    ]
    return Schema(
        run=run, method_sections=sections, parser_classes=(FakeRunArguments, FakeGaLore, FakeReLoRA), methods=METHODS
    )


def fake_estimate(method: str, typed: dict) -> dict:
    """Bytes per component of a 1M-parameter model: the optimizer state shrinks for the low-rank methods."""
    params = 1_000_000
    optimizer = {"full": 2 * 4 * params, "lora": 0.1 * 8 * params, "relora": 0.1 * 8 * params}.get(method)
    if optimizer is None:
        optimizer = 8 * params * typed.get("rank", 128) / 512  # a rank of None would fail here
    return {"weights": 4 * params, "gradients": 4 * params, "optimizer_state": optimizer, "activations": 2**21}


FAKE_TRAIN = r"""
import json, os, sys, time
argv = sys.argv[1:]
out = argv[argv.index("--output_dir") + 1]
steps = int(argv[argv.index("--max_steps") + 1]) if "--max_steps" in argv else 10_000
with open(os.path.join(out, "metrics.jsonl"), "a") as f:
    for step in range(1, steps + 1):
        f.write(json.dumps({"step": step, "loss": 10.0 / step, "lr": 1e-3}) + "\n"); f.flush()
        if os.path.exists(os.path.join(out, "STOP")):
            os.makedirs(os.path.join(out, f"checkpoint-{step}"))
            sys.exit(0)
        time.sleep(0.02)
json.dump({"peak_memory_mb": 42.5, "eval_perplexity": 20.0}, open(os.path.join(out, "summary.json"), "w"))
"""


def fake_cli(tmp_path) -> list[str]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return [sys.executable, str(script)]
