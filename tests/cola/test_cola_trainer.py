"""CoLA pre-trains in the stock Trainer, built from config, with stock optimizers and with our GaLore on its factors."""

import pytest
import torch
from cola_helpers import VOCAB, tiny_config
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

import hf_pept  # noqa: F401  (registers CoLA and the GaLore optim names)


class _Blocks(torch.utils.data.Dataset):
    """The same 8 random sequences every epoch: a loss that falls means the model learns."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (8, 32), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


GALORE = {"optim_target_modules": [r".*attn.*", r".*mlp.*"], "optim_args": "rank=8"}


@pytest.mark.parametrize(
    "optim, cola_m, extra",
    [
        ("adamw_torch", False, {}),
        ("adamw_torch", True, {}),
        ("galore_adamw", False, GALORE),
        ("galore_adamw_8bit", True, GALORE),
        # bitsandbytes' own 8-bit AdamW steps on CUDA only
        pytest.param("adamw_bnb_8bit", True, {"use_cpu": False}, marks=pytest.mark.gpu),
    ],
)
def test_stock_trainer_pretrains_cola_from_config(tmp_path, one_cpu_thread, optim, cola_m, extra):
    if "8bit" in optim:
        pytest.importorskip("bitsandbytes")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(cola_m=cola_m))
    args = TrainingArguments(
        str(tmp_path), optim=optim, learning_rate=6e-3, max_steps=12, per_device_train_batch_size=8,
        logging_steps=1, save_strategy="no", report_to=[], seed=0, **{"use_cpu": True, **extra},
    )  # fmt: skip
    trainer = Trainer(model=model, args=args, train_dataset=_Blocks())
    trainer.train()
    losses = [record["loss"] for record in trainer.state.log_history if "loss" in record]
    assert losses[-1] < losses[0] - 0.5, losses
    if optim.startswith("galore"):  # both factors of every CoLA linear are projected (rank 8 < r = 16)
        projected = [g for g in trainer.optimizer.param_groups if g.get("rank") == 8]
        assert sum(len(g["params"]) for g in projected) == 2 * 7 * 2
