"""GaLore in a plain PyTorch loop (no Trainer): the optimizer is an ordinary torch.optim.Optimizer.

python examples/plain_pytorch_loop.py --model tiny --max_steps 50
"""

import argparse
import math

import torch
from torch.utils.data import DataLoader

from hf_pept import GaLoreAdamW
from hf_pept.data import build_datasets, get_tokenizer
from hf_pept.models import build_llama


@torch.no_grad()
def evaluate(model, loader):
    """exp(mean token NLL) over the held-out blocks (all blocks have the same length)."""
    model.eval()
    losses = [model(**batch).loss.item() for batch in loader]
    model.train()
    return math.exp(sum(losses) / len(losses))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"

    tokenizer = get_tokenizer(vocab_size=2048)
    # Only the tokens the run needs are tokenized (8 sequences of 128 tokens per step).
    train_ds, eval_ds = build_datasets(
        tokenizer, seq_len=128, max_train_tokens=args.max_steps * 8 * 128, max_eval_tokens=8192
    )
    model = build_llama(args.model, vocab_size=len(tokenizer), seed=0).to(device)
    projected = [p for name, p in model.named_parameters() if p.dim() == 2 and ("self_attn" in name or "mlp" in name)]
    others = [p for p in model.parameters() if all(p is not q for q in projected)]
    optimizer = GaLoreAdamW(
        [{"params": projected, "rank": args.rank, "update_proj_gap": 50, "scale": 0.25}, {"params": others}],
        lr=1e-2,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / args.max_steps))
    )
    loader = DataLoader(train_ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0))
    eval_loader = DataLoader(eval_ds, batch_size=8)
    step, batches = 0, iter(loader)
    while step < args.max_steps:
        try:
            batch = next(batches)
        except StopIteration:
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        for event in optimizer.pop_events():  # GaLore reports its projector refreshes
            print(f"step {step}: {event['event']} ({event['num_params']} weights)")
        if step % max(1, args.max_steps // 10) == 0:
            print(f"step {step}: loss {loss.item():.3f}")
    print(f"held-out perplexity: {evaluate(model, eval_loader):.2f}")


if __name__ == "__main__":
    main()
