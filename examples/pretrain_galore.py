"""Pre-train a LLaMA with GaLore through the stock transformers Trainer: `import hf_pept` is the only extra line.

python examples/pretrain_galore.py --model tiny --max_steps 50
"""

import argparse
import os

import torch
from transformers import Trainer, TrainingArguments

import hf_pept  # noqa: F401  (makes optim="galore_adamw" run hf-pept's GaLore)
from hf_pept.data import build_datasets, get_tokenizer
from hf_pept.metrics import perplexity
from hf_pept.models import build_llama


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="LLaMA size: tiny, 20m, 60m, 130m, 350m, 1b")
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--output_dir", default="runs/example-galore")
    args = parser.parse_args(argv)

    tokenizer = get_tokenizer(vocab_size=2048)  # BPE on the built-in corpus (Python's own sources), cached
    # Only the tokens the run needs are tokenized (8 sequences of 128 tokens per step).
    train_ds, eval_ds = build_datasets(
        tokenizer, seq_len=128, max_train_tokens=args.max_steps * 8 * 128, max_eval_tokens=8192
    )
    model = build_llama(args.model, vocab_size=len(tokenizer), seed=0)
    launched_on_cpu_ranks = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    training_args = TrainingArguments(
        args.output_dir,
        optim="galore_adamw",
        optim_target_modules=[r".*self_attn.*", r".*mlp.*"],
        optim_args=f"rank={args.rank},update_proj_gap=50,scale=0.25",
        learning_rate=1e-2,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 10),
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        # CPU ranks started by examples/ddp_accelerate.sh join a gloo group; a single process needs no backend
        # (naming one outside a launcher makes accelerate look for a process group that does not exist).
        ddp_backend="gloo" if launched_on_cpu_ranks else None,
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds)
    trainer.train()
    ppl = perplexity(trainer.evaluate()["eval_loss"])
    if trainer.is_world_process_zero():
        print(f"held-out perplexity: {ppl:.2f} ({training_args.world_size} training process(es))")


if __name__ == "__main__":
    main()
