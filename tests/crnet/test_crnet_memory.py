"""``hf_pept.memory.estimate`` for CR-Net against built models: weights, gradients and AdamW state exact,
activations within 20 % of the bytes autograd keeps at their peak (released tensors tracked, so that the
recomputation in backward is counted too)."""

import pytest
import torch

from hf_pept import memory
from hf_pept.metrics import optimizer_state_bytes, peak_saved_activation_bytes
from hf_pept.models import build_crnet

VOCAB, BATCH, SEQ = 300, 2, 16


def _tensor_bytes(tensors):
    return sum({t.untyped_storage().data_ptr(): t.numel() * t.element_size() for t in tensors}.values())


@pytest.mark.parametrize("recompute", [False, True])
def test_weights_gradients_and_optimizer_state_are_exact(one_cpu_thread, recompute):
    model = build_crnet("tiny", VOCAB, max_position_embeddings=SEQ, seed=0, recompute=recompute).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    expected = memory.estimate(
        "crnet", model="tiny", vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH, recompute=recompute
    )
    assert expected.weights == _tensor_bytes(model.parameters())
    assert expected.gradients == _tensor_bytes(p.grad for p in model.parameters())
    assert expected.optimizer_state == optimizer_state_bytes(optimizer)
    assert expected.trained_params == expected.total_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "size, recompute, vocab, batch, seq",
    [("tiny", False, 512, 4, 64), ("20m", False, 1024, 1, 128), ("tiny", True, 512, 4, 64), ("20m", True, 512, 2, 64)],
)
def test_activations_within_20_percent_of_the_saved_tensors(one_cpu_thread, size, recompute, vocab, batch, seq):
    model = build_crnet(size, vocab, max_position_embeddings=seq, seed=0, recompute=recompute).train()
    ids = torch.randint(0, vocab, (batch, seq))
    measured = peak_saved_activation_bytes(model, ids)
    estimated = memory.estimate(
        "crnet", model=size, vocab_size=vocab, seq_len=seq, batch_size=batch, recompute=recompute
    ).activations
    assert abs(estimated - measured) / measured < 0.2, (estimated, measured)


def test_recompute_estimate_keeps_far_less_and_block_checkpointing_is_refused():
    plain = memory.estimate("crnet", model="1b", batch_size=8, seq_len=256)
    recomputed = memory.estimate("crnet", model="1b", batch_size=8, seq_len=256, recompute=True)
    full = memory.estimate("full", model="1b", batch_size=8, seq_len=256)
    assert recomputed.activations < 0.35 * plain.activations
    assert plain.weights < 0.5 * full.weights  # 640M against 1339M at r = d/4
    with pytest.raises(ValueError, match="use recompute=True"):
        memory.estimate("crnet", model="tiny", gradient_checkpointing=True)
