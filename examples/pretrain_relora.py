"""Pre-train a LLaMA with ReLoRA (full-rank warm start, then merges and restarts) in the stock transformers Trainer.

python examples/pretrain_relora.py --model tiny --max_steps 80
"""

import argparse

from peft import get_peft_model
from transformers import Trainer, TrainingArguments

from hf_pept import ReLoRAConfig
from hf_pept.data import build_datasets, get_tokenizer
from hf_pept.metrics import perplexity
from hf_pept.models import build_llama


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="LLaMA size: tiny, 20m, 60m, 130m, 350m, 1b")
    parser.add_argument("--max_steps", type=int, default=200)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--output_dir", default="runs/example-relora")
    args = parser.parse_args(argv)

    tokenizer = get_tokenizer(vocab_size=2048)
    # Only the tokens the run needs are tokenized (8 sequences of 128 tokens per step).
    train_ds, eval_ds = build_datasets(
        tokenizer, seq_len=128, max_train_tokens=args.max_steps * 8 * 128, max_eval_tokens=8192
    )
    model = build_llama(args.model, vocab_size=len(tokenizer), seed=0)
    quarter = max(2, args.max_steps // 4)
    config = ReLoRAConfig(
        r=args.rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        modules_to_save=["embed_tokens", "lm_head"],  # from scratch, embeddings and head train fully
        warm_start_steps=quarter,  # full-rank for the first quarter (Lialin et al. 2023, §3)
        relora_steps=quarter,
        restart_warmup_steps=max(1, quarter // 5),
        lora_dropout=0.0,
    )
    model = get_peft_model(model, config)
    model.print_trainable_parameters()
    training_args = TrainingArguments(
        args.output_dir,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, args.max_steps // 10),
        max_steps=args.max_steps,
        per_device_train_batch_size=8,
        logging_steps=max(1, args.max_steps // 10),
        save_strategy="no",
        report_to=[],
    )
    trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds)
    trainer.train()  # merges, optimizer resets and the jagged LR happen inside, logged as events
    merges = [r["step"] for r in trainer.state.log_history if r.get("event") == "relora_merge"]
    print(f"merges at steps {merges}; held-out perplexity: {perplexity(trainer.evaluate()['eval_loss']):.2f}")


if __name__ == "__main__":
    main()
