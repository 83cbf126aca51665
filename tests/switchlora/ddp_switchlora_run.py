"""Run under ``accelerate launch --multi_gpu --num_processes 2`` with CUDA hidden: SwitchLoRA in the stock Trainer
on 2 gloo ranks. Each rank saves its factors, base weights, switching state and events to ``<out>/rank<i>.pt``."""

import sys
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

import hf_pept
from hf_pept.switchlora import CandidatePool

sys.path.insert(0, str(Path(__file__).parent))
from switchlora_helpers import tiny_llama, token_dataset  # noqa: E402


class DivergeGlobalRNG(TrainerCallback):
    """Give each rank a different global RNG stream: the switches must not depend on it."""

    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1000 + args.process_index)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    config = hf_pept.SwitchLoRAConfig(r=4, switch_interval=12, freeze_steps=2, switch_descent_rate=10.0)
    model = get_peft_model(tiny_llama(), config)
    args = TrainingArguments(
        out,
        max_steps=6,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=True,
        ddp_backend="gloo",
        seed=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=token_dataset(), callbacks=[DivergeGlobalRNG()])
    trainer.train()
    tensors = {
        name: p.detach().clone()
        for name, p in model.named_parameters()
        if "switchlora_" in name or "base_layer" in name
    }
    for name, pool in model.named_modules():
        if isinstance(pool, CandidatePool):
            tensors.update({f"{name}.{key}": getattr(pool, key).clone() for key in pool.TENSORS})
    events = [(r["step"], r["vectors"]) for r in trainer.state.log_history if r.get("event") == "switchlora_switch"]
    payload = {"tensors": tensors, "events": events, "world_size": args.world_size}
    torch.save(payload, out / f"rank{args.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
