"""Run under ``accelerate launch --multi_gpu --num_processes 2`` with CUDA hidden: SwitchLoRA in the stock Trainer
on 2 gloo ranks. Each rank saves its factors, base weights, switching state and events to ``<out>/rank<i>.pt``."""

import sys
from pathlib import Path

from peft import get_peft_model

import hf_pept
from hf_pept.switchlora import CandidatePool

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from ddp_launch import save_rank, train_on_rank  # noqa: E402
from switchlora_helpers import tiny_llama, token_dataset  # noqa: E402


def main(out: Path) -> None:
    config = hf_pept.SwitchLoRAConfig(r=4, switch_interval=12, freeze_steps=2, switch_descent_rate=10.0)
    model, trainer = train_on_rank(lambda: get_peft_model(tiny_llama(), config), out, 6, token_dataset())
    tensors = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if "switchlora_" in name or "base_layer" in name
    }
    for name, pool in model.named_modules():
        if isinstance(pool, CandidatePool):
            tensors.update({f"{name}.{key}": getattr(pool, key).clone() for key in pool.TENSORS})
    events = [(r["step"], r["vectors"]) for r in trainer.state.log_history if r.get("event") == "switchlora_switch"]
    save_rank(trainer, out, tensors=tensors, events=events)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
