"""CoLA-M against CoLA on the same weights: same loss and gradients, fewer bytes kept for backward (counted with
``torch.autograd.graph.saved_tensors_hooks``), and exactly the layer inputs plus the seven r-dim A·x per layer."""

import pytest
import torch
from cola_helpers import VOCAB, tiny_config

from hf_pept.cola import CoLAForCausalLM

BATCH, SEQ = 2, 32


def _pair(**overrides):
    """A CoLA model and a CoLA-M model with the same weights, in training mode."""
    torch.manual_seed(0)
    cola = CoLAForCausalLM(tiny_config(**overrides))
    cola_m = CoLAForCausalLM(tiny_config(cola_m=True, **overrides))
    cola_m.load_state_dict(cola.state_dict())
    return cola.train(), cola_m.train()


def _forward_saved_bytes(model, ids):
    """(loss, bytes of the non-parameter tensors autograd keeps for backward after the forward pass), each storage
    counted once."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    return loss, sum(saved.values())


def _relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("only_lr_act", [True, False])
def test_cola_m_has_colas_loss_and_gradients_and_keeps_far_fewer_bytes(only_lr_act):
    cola, cola_m = _pair(only_lr_act=only_lr_act)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    loss, cola_bytes = _forward_saved_bytes(cola, ids)
    loss_m, cola_m_bytes = _forward_saved_bytes(cola_m, ids)
    loss.backward()
    loss_m.backward()
    assert loss_m.item() == pytest.approx(loss.item(), rel=1e-6)
    for (name, p), p_m in zip(cola.named_parameters(), cola_m.parameters()):
        assert p_m.grad is not None, name
        assert _relative_error(p_m.grad, p.grad) <= 1e-5, name
    assert cola_m_bytes < 0.5 * cola_bytes, (cola_m_bytes, cola_bytes)


def test_cola_m_keeps_exactly_each_layer_input_and_its_seven_low_rank_activations():
    """Saved by the layers = layers × tokens × (d + 7r) fp32 values: the difference between two and one layer."""
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    measured = []
    for layers in (1, 2):
        torch.manual_seed(0)
        model = CoLAForCausalLM(tiny_config(cola_m=True, num_hidden_layers=layers)).train()
        measured.append(_forward_saved_bytes(model, ids)[1])
    d, r = 64, 16
    assert measured[1] - measured[0] == BATCH * SEQ * (d + 7 * r) * 4


def test_cola_m_under_bf16_autocast_matches_cola():
    cola, cola_m = _pair()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = cola(input_ids=ids, labels=ids).loss
        loss_m = cola_m(input_ids=ids, labels=ids).loss
    loss.backward()
    loss_m.backward()
    assert loss_m.item() == pytest.approx(loss.item(), rel=1e-3)
    for p, p_m in zip(cola.parameters(), cola_m.parameters()):
        assert p_m.grad.dtype == torch.float32
        assert _relative_error(p_m.grad, p.grad) <= 2e-2


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning")
def test_cola_m_refuses_gradient_checkpointing_and_cola_accepts_it():
    cola, cola_m = _pair()
    with pytest.raises(ValueError, match="CoLA-M already recomputes"):
        cola_m.gradient_checkpointing_enable()
    with pytest.raises(ValueError, match="CoLA-M already recomputes"):
        cola_m.activation_checkpointing_enable()
    reference, _ = _pair()
    cola.activation_checkpointing_enable()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    cola(input_ids=ids, labels=ids).loss.backward()
    reference(input_ids=ids, labels=ids).loss.backward()
    for p, q in zip(cola.parameters(), reference.parameters()):
        assert _relative_error(p.grad, q.grad) <= 1e-5


def test_cola_m_runs_as_plain_cola_without_gradients():
    cola, cola_m = _pair()
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    with torch.no_grad():
        torch.testing.assert_close(cola_m(input_ids=ids).logits, cola(input_ids=ids).logits, rtol=0, atol=0)
    _, saved = _forward_saved_bytes(cola_m.eval(), ids)
    _, saved_cola = _forward_saved_bytes(cola.eval(), ids)
    assert saved == saved_cola  # eval mode with gradients: plain CoLA's graph (only training recomputes)
