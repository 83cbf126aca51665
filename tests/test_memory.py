"""memory.estimate against measurement: exact parameter / gradient / optimizer-state bytes, activations within 20 %."""

import pytest
import torch
from tuner_helpers import saved_activation_bytes as _saved_activation_bytes

from hf_pept import memory
from hf_pept.galore import GaLoreAdafactor, GaLoreAdamW
from hf_pept.galore.config import GaLoreConfig
from hf_pept.galore.integration import galore_param_groups
from hf_pept.metrics import optimizer_state_bytes
from hf_pept.models import build_llama
from hf_pept.run_args import AdapterArguments, LowRankArguments, RunArguments, prepare
from hf_pept.runner import apply_method

VOCAB, RANK, BATCH, SEQ = 300, 8, 2, 16
TARGETS = ["q_proj", "v_proj", "up_proj", "down_proj"]


def _tensor_bytes(tensors):
    seen = {}
    for t in tensors:
        seen[t.untyped_storage().data_ptr()] = t.numel() * t.element_size()
    return sum(seen.values())


def _model_and_optimizer(method):
    model = build_llama("tiny", VOCAB, max_position_embeddings=SEQ, seed=0)
    if method in ("lora", "relora", "sst"):
        run = RunArguments(method=method)
        low_rank = LowRankArguments(rank=RANK, target_modules=TARGETS)
        model = apply_method(model, prepare(run, low_rank, AdapterArguments(lora_dropout=0.0)))
        return model, torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    if method == "full":
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3)
    config = GaLoreConfig(rank=RANK, update_proj_gap=10, fira=method == "fira")
    groups = galore_param_groups(model, TARGETS, config, 0.0)
    optimizer_class = GaLoreAdafactor if method == "galore-adafactor" else GaLoreAdamW
    return model, optimizer_class(groups, lr=1e-3, layerwise=method == "galore-layerwise")


@pytest.mark.parametrize(
    "method", ["full", "lora", "relora", "sst", "galore", "galore-adafactor", "galore-layerwise", "fira"]
)
def test_weights_gradients_and_optimizer_state_are_exact(method):
    model, optimizer = _model_and_optimizer(method)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    measured_grads = 0

    def count_grads():
        return _tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)

    if method == "galore-layerwise":
        # Each layer's gradient is freed in its hook: record the most gradient bytes alive at once.
        def hook(param):
            nonlocal measured_grads
            measured_grads = max(measured_grads, count_grads())

        handles = [p.register_post_accumulate_grad_hook(hook) for p in model.parameters()]
        model(input_ids=ids, labels=ids).loss.backward()
        for handle in handles:
            handle.remove()
    else:
        model(input_ids=ids, labels=ids).loss.backward()
        measured_grads = count_grads()
    optimizer.step()
    expected = memory.estimate(method, model="tiny", vocab_size=VOCAB, seq_len=SEQ, batch_size=BATCH, rank=RANK,
                               target_modules=TARGETS)  # fmt: skip
    # SST stores U, Σ, V as Parameters (W emptied) and which triplet each column is as int64 buffers.
    indices = [b for name, b in model.named_buffers() if name.rsplit(".", 2)[-2].endswith("_index")]
    assert expected.weights == _tensor_bytes(model.parameters()) + _tensor_bytes(indices)
    assert expected.optimizer_state == optimizer_state_bytes(optimizer)
    if method == "galore-layerwise":
        # The hook sees the gradient just accumulated, before the update frees it: at most one at a time.
        assert measured_grads <= expected.gradients
    else:
        assert expected.gradients == measured_grads
    assert expected.trained_params == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_sst_estimate_says_weights_grow_and_state_shrinks():
    full, lora, sst = (memory.estimate(m, model="60m") for m in ("full", "lora", "sst"))
    # Square attention matrices store U, Σ, V: 2·d² + d values instead of d².
    assert sst.weights > lora.weights > full.weights
    assert sst.optimizer_state < full.optimizer_state and sst.optimizer_state > lora.optimizer_state * 0.99
    assert "weights grow" in sst.note and "optimizer state" in sst.note and not full.note


def test_low_rank_methods_need_less_optimizer_state_than_full_rank():
    at_60m = {m: memory.estimate(m, model="60m") for m in ("full", "lora", "galore", "galore-8bit")}
    # 60M at a 32k vocabulary: the embeddings and head (not projected) hold over half of full-rank state.
    assert at_60m["galore"].optimizer_state < 0.75 * at_60m["full"].optimizer_state
    assert at_60m["galore-8bit"].optimizer_state < at_60m["galore"].optimizer_state
    assert at_60m["lora"].gradients < at_60m["full"].gradients


@pytest.mark.parametrize(
    "size, vocab, batch, seq", [("tiny", 512, 4, 64), ("tiny", 2048, 2, 128), ("20m", 1024, 1, 128)]
)
def test_activations_within_20_percent_of_saved_tensors(size, vocab, batch, seq):
    model = build_llama(size, vocab, max_position_embeddings=seq, seed=0)
    ids = torch.randint(0, vocab, (batch, seq))
    measured = _saved_activation_bytes(model, ids)
    estimated = memory.estimate("full", model=size, vocab_size=vocab, seq_len=seq, batch_size=batch).activations
    assert abs(estimated - measured) / measured < 0.2, (estimated, measured)


@pytest.mark.gpu
def test_cuda_allocation_after_forward_matches_the_activation_estimate():
    """What the CUDA allocator holds after the forward pass (the output, logits included, already dropped) is the
    saved activations: measured by the allocator instead of by autograd's hooks."""
    device = torch.device("cuda")
    model = build_llama("20m", 4096, max_position_embeddings=256, seed=0).to(device)
    ids = torch.randint(0, 4096, (8, 256), device=device)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    loss = model(input_ids=ids, labels=ids).loss
    torch.cuda.synchronize()
    held = torch.cuda.memory_allocated() - before
    loss.backward()
    expected = memory.estimate("full", model="20m", vocab_size=4096, seq_len=256, batch_size=8, precision="fp32")
    assert abs(expected.activations - held) / held < 0.2, (expected.activations, held)


def test_estimate_rejects_bad_input():
    with pytest.raises(ValueError, match="method"):
        memory.estimate("dora")
    with pytest.raises(ValueError, match="rank"):
        memory.estimate("galore", rank=0)


def test_estimate_command(capsys):
    assert memory.main(["--model", "tiny", "--vocab_size", "512", "--method", "galore", "--rank", "16"]) == 0
    out = capsys.readouterr().out
    assert "galore" in out and "(MB)" in out
