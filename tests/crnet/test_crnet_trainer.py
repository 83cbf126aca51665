"""CR-Net pre-trains in the stock Trainer, built from config, with stock optimizers, with and without recompute."""

import pytest
import torch
from crnet_helpers import VOCAB, tiny_config
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

import hf_pept  # noqa: F401  (registers CR-Net)


class _Blocks(torch.utils.data.Dataset):
    """The same 8 random sequences every epoch: a loss that falls means the model learns."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (8, 32), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


@pytest.mark.parametrize("optim, recompute", [("adamw_torch", False), ("adamw_torch", True), ("adafactor", True)])
def test_stock_trainer_pretrains_crnet_from_config(tmp_path, one_cpu_thread, optim, recompute):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(recompute=recompute, checkpoint_every=2))
    args = TrainingArguments(
        str(tmp_path), optim=optim, learning_rate=6e-3, max_steps=12, per_device_train_batch_size=8,
        logging_steps=1, save_strategy="no", report_to=[], seed=0, use_cpu=True,
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks())
    trainer.train()
    losses = [record["loss"] for record in trainer.state.log_history if "loss" in record]
    assert losses[-1] < losses[0] - 0.5, losses


def test_trainer_gradient_checkpointing_is_refused_with_the_alternative(tmp_path):
    model = AutoModelForCausalLM.from_config(tiny_config())
    args = TrainingArguments(str(tmp_path), max_steps=1, gradient_checkpointing=True, report_to=[], use_cpu=True)
    with pytest.raises(ValueError, match="recompute=True"):
        Trainer(model=model, args=args, train_dataset=_Blocks()).train()
