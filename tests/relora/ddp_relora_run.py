"""Run under ``accelerate launch --multi_gpu --num_processes 2`` (CUDA hidden): ReLoRA in the stock Trainer on 2 gloo
ranks.

Each rank saves its ReLoRA parameters and events to ``<out>/rank<i>.pt`` for test_relora_ddp.py to compare.
"""

import sys
from pathlib import Path

from peft import get_peft_model

import hf_pept

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from ddp_launch import save_rank, train_on_rank  # noqa: E402
from relora_helpers import tiny_llama, token_dataset  # noqa: E402


def main(out: Path) -> None:
    config = hf_pept.ReLoRAConfig(r=4, relora_steps=3, restart_warmup_steps=1, lora_dropout=0.0)
    model, trainer = train_on_rank(lambda: get_peft_model(tiny_llama(), config), out, 7, token_dataset())
    params = {
        name: p.detach().clone() for name, p in model.named_parameters() if "relora_" in name or "base_layer" in name
    }
    events = [(r["step"], r["event"]) for r in trainer.state.log_history if "event" in r]
    save_rank(trainer, out, params=params, events=events)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
