"""A peak learning rate of its own for the input embeddings and the output head (``--embedding_learning_rate``).

Why it exists: in a small model the embeddings and the head hold a large share of the parameters. The low-rank
optimizers and tuners that are stable at a high rate (GaLore, SwitchLoRA, SST) train these unprojected tensors at
that high rate too, while full-rank's one rate is capped by its matrices. Full-rank with the low-rank method's rate
on these tensors alone is the controlled run that tells a lead of the method from a lead of the embeddings' rate
(``benchmarks/compare_controls.py``).

How: the Trainer builds its optimizer as always (class, kwargs and the decay / no-decay groups of
``TrainingArguments``); each group's embedding and head tensors then move to a group of their own, a copy of the
group's settings with ``lr`` = the embedding rate. The schedule (warm-up, cosine) is created afterwards, so it
scales every group's peak alike. Applies to methods trained by the Trainer's own optimizer; the GaLore family forms
its groups in its optimizer and is refused up front (:class:`hf_pept.run_args.RunArguments`).
"""

from __future__ import annotations

import torch
from transformers import Trainer


def embedding_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The input-embedding and output-head weights of ``model`` (one tensor when they are tied), trainable ones
    only."""
    found: dict[int, torch.nn.Parameter] = {}
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        for p in module.parameters() if module is not None else ():
            if p.requires_grad:
                found[id(p)] = p
    return list(found.values())


def split_embedding_groups(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], lr: float) -> None:
    """Move ``params`` out of ``optimizer``'s groups into groups of their own at peak rate ``lr`` (before any step:
    the optimizer holds no state yet)."""
    if optimizer.state:
        raise RuntimeError("split_embedding_groups must run before the first optimizer step")
    ids = {id(p) for p in params}
    moved = []
    for group in list(optimizer.param_groups):
        chosen = [p for p in group["params"] if id(p) in ids]
        if not chosen:
            continue
        group["params"] = [p for p in group["params"] if id(p) not in ids]
        moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": chosen, "lr": lr})
        if not group["params"]:
            optimizer.param_groups.remove(group)
    for group in moved:
        optimizer.add_param_group(group)


class EmbeddingLearningRateTrainer(Trainer):
    """The stock ``Trainer`` whose optimizer trains the embeddings and head at ``embedding_learning_rate``."""

    def __init__(self, *args, embedding_learning_rate: float, **kwargs):
        self.embedding_learning_rate = embedding_learning_rate
        super().__init__(*args, **kwargs)

    def create_optimizer(self, model=None):
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        if fresh:
            opt_model = self.model if model is None else model
            split_embedding_groups(optimizer, embedding_parameters(opt_model), self.embedding_learning_rate)
        return optimizer


__all__ = ["EmbeddingLearningRateTrainer", "embedding_parameters", "split_embedding_groups"]
