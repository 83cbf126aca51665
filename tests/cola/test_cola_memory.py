"""``hf_pept.memory.estimate`` for CoLA and CoLA-M against built models: weights, gradients and AdamW state exact,
activations within 20 % of the bytes autograd keeps (counted with ``saved_tensors_hooks``, released tensors tracked
so that CoLA-M's recomputation in backward is counted too)."""

import pytest
import torch

from hf_pept import memory
from hf_pept.metrics import optimizer_state_bytes, peak_saved_activation_bytes
from hf_pept.models import build_cola

VOCAB, BATCH, SEQ = 300, 2, 16


def _tensor_bytes(tensors):
    return sum({t.untyped_storage().data_ptr(): t.numel() * t.element_size() for t in tensors}.values())


@pytest.mark.parametrize("method", ["cola", "cola-m"])
def test_weights_gradients_and_optimizer_state_are_exact(method):
    model = build_cola("tiny", VOCAB, max_position_embeddings=SEQ, seed=0, cola_m=method == "cola-m").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    expected = memory.estimate(method, model="tiny", vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH)
    assert expected.weights == _tensor_bytes(model.parameters())
    assert expected.gradients == _tensor_bytes(p.grad for p in model.parameters())
    assert expected.optimizer_state == optimizer_state_bytes(optimizer)
    assert expected.trained_params == expected.total_params == sum(p.numel() for p in model.parameters())
    llama = memory.estimate("full", model="tiny", vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH)
    assert expected.total_params < llama.total_params


@pytest.mark.parametrize("size, expected", [("60m", 42_770_944), ("1b", 609_310_720)])
def test_parameter_count_is_colas_closed_form(size, expected):
    """r(11d + 3f) per layer + 2d norms, one final norm, untied V×d embeddings and head (values in
    test_cola_model.py's closed form; the paper's CoLA-1B is 609M)."""
    assert memory.estimate("cola", model=size, vocab_size=32000).total_params == expected


@pytest.mark.parametrize(
    "method, size, only_lr_act, vocab, batch, seq",
    [
        ("cola", "tiny", "auto", 512, 4, 64),
        ("cola", "tiny", "true", 2048, 2, 128),
        ("cola", "20m", "auto", 1024, 1, 128),
        ("cola-m", "tiny", "auto", 512, 4, 64),
        ("cola-m", "20m", "true", 1024, 1, 128),
    ],
)
def test_activations_within_20_percent_of_the_saved_tensors(method, size, only_lr_act, vocab, batch, seq):
    model = build_cola(
        size, vocab, max_position_embeddings=seq, seed=0, cola_m=method == "cola-m", only_lr_act=only_lr_act
    ).train()
    ids = torch.randint(0, vocab, (batch, seq))
    measured = peak_saved_activation_bytes(model, ids)
    estimated = memory.estimate(
        method, model=size, vocab_size=vocab, seq_len=seq, batch_size=batch, only_lr_act=only_lr_act
    ).activations
    assert abs(estimated - measured) / measured < 0.2, (estimated, measured)


def test_cola_m_estimate_keeps_far_less_than_cola_and_refuses_checkpointing_on_top():
    at_60m = {m: memory.estimate(m, model="60m", batch_size=8, seq_len=256) for m in ("full", "cola", "cola-m")}
    # at the paper's 32k vocabulary the fp32 log-softmax of the logits (the same for both) is most of CoLA-M's
    assert at_60m["cola-m"].activations < 0.5 * at_60m["cola"].activations
    assert at_60m["cola"].weights < 0.75 * at_60m["full"].weights
    with pytest.raises(ValueError, match="CoLA-M already recomputes"):
        memory.estimate("cola-m", model="tiny", gradient_checkpointing=True)
    checkpointed = memory.estimate("cola", model="60m", batch_size=8, seq_len=256, gradient_checkpointing=True)
    assert checkpointed.activations < at_60m["cola"].activations
