"""Run under ``accelerate launch --cpu --num_processes 2``: ReLoRA in the stock Trainer on 2 gloo ranks.

Each rank saves its ReLoRA parameters and events to ``<out>/rank<i>.pt`` for test_relora_ddp.py to compare.
"""

import sys
from pathlib import Path

import torch
from peft import get_peft_model
from transformers import Trainer, TrainerCallback, TrainingArguments

import hf_pept

sys.path.insert(0, str(Path(__file__).parent))
from relora_helpers import tiny_llama, token_dataset  # noqa: E402


class DivergeGlobalRNG(TrainerCallback):
    """Give each rank a different global RNG stream: the re-initialisation must not depend on it."""

    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1000 + args.process_index)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    config = hf_pept.ReLoRAConfig(r=4, relora_steps=3, restart_warmup_steps=1, lora_dropout=0.0)
    model = get_peft_model(tiny_llama(), config)
    args = TrainingArguments(
        out,
        max_steps=7,
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
    params = {
        name: p.detach().clone() for name, p in model.named_parameters() if "relora_" in name or "base_layer" in name
    }
    events = [(r["step"], r["event"]) for r in trainer.state.log_history if "event" in r]
    torch.save(
        {"params": params, "events": events, "world_size": args.world_size}, out / f"rank{args.process_index}.pt"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
