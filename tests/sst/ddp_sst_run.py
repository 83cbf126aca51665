"""Run under ``accelerate launch --multi_gpu --num_processes 2`` (CUDA hidden): SST in the stock Trainer on 2 gloo
ranks. Each rank saves its SST tensors, its events and the draws it makes *locally* (no broadcast) for step 12 to
``<out>/rank<i>.pt`` for test_sst_ddp.py to compare.
"""

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
from ddp_launch import save_rank, train_on_rank  # noqa: E402
from sst_helpers import sst_model, token_dataset  # noqa: E402


def main(out: Path) -> None:
    make_model = lambda: sst_model(iteration_steps=2, iteration_warmup_steps=1, round_iterations=2)  # noqa: E731
    model, trainer = train_on_rank(make_model, out, 5, token_dataset())
    tensors = {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()] if "sst_" in n}
    events = [(r["step"], r["event"]) for r in trainer.state.log_history if "event" in r]
    local_draws = model.base_model.draw_active(step=12)
    save_rank(trainer, out, tensors=tensors, events=events, draws=local_draws)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
