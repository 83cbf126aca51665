"""Run under ``accelerate launch --multi_gpu --num_processes 2`` (CUDA hidden): SST in the stock Trainer on 2 gloo
ranks. Each rank saves its SST tensors, its events and the draws it makes *locally* (no broadcast) for step 12 to
``<out>/rank<i>.pt`` for test_sst_ddp.py to compare.
"""

import sys
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

sys.path.insert(0, str(Path(__file__).parent))
from sst_helpers import sst_model, token_dataset  # noqa: E402


class DivergeGlobalRNG(TrainerCallback):
    """Give each rank a different global RNG stream: the sampling must not depend on it."""

    def on_train_begin(self, args, state, control, **kwargs):
        torch.manual_seed(1000 + args.process_index)


def main(out: Path) -> None:
    torch.set_num_threads(1)
    model = sst_model(iteration_steps=2, iteration_warmup_steps=1, round_iterations=2)
    args = TrainingArguments(
        out,
        max_steps=5,
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
    tensors = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()] if "sst_" in n}
    events = [(r["step"], r["event"]) for r in trainer.state.log_history if "event" in r]
    local_draws = model.base_model.draw_active(step=12)
    torch.save(
        {"tensors": tensors, "events": events, "draws": local_draws, "world_size": args.world_size},
        out / f"rank{args.process_index}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
