"""CR-Net as a transformers model: the forward against the recurrence written out here, layer 1 full-rank, the
parameter count against the closed form (and the rank behind the paper's 583M at 1B), the Auto classes,
save/load, generate, the initialisation, β at 0, and the config checks."""

import pytest
import torch
import torch.nn.functional as F
from crnet_helpers import VOCAB, tiny_config
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from hf_pept.crnet import CRNetConfig, CRNetForCausalLM
from hf_pept.models import count_parameters, crnet_config

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _reference_logits(model: CRNetForCausalLM, ids: torch.Tensor) -> torch.Tensor:
    """The paper's recurrence as a plain loop over the model's tensors: Y_1 = X W_1ᵀ-stored, Y_l = sgn(β)(|β| + ε)
    Y_{l−1} + X A B, each projection fed by the same projection's output in the block below."""
    config, inner = model.config, model.model
    eps, heads, head_dim = (
        config.beta_eps,
        config.num_attention_heads,
        config.hidden_size // config.num_attention_heads,
    )
    hidden = inner.embed_tokens(ids)
    cos, sin = inner.rotary_emb(hidden, position_ids=torch.arange(ids.shape[1])[None])
    previous: dict[str, torch.Tensor] = {}

    def project(layer_index, module, name, x):
        if layer_index == 0:
            y = x @ module.weight.T  # W stored as h_out×h_in
        else:
            beta = module.beta
            scale = torch.sign(beta) * (beta.abs() + eps)
            y = scale * previous[name] + (x @ module.weight_a.T) @ module.weight_b.T
        previous[name] = y
        return y

    batch, seq = ids.shape
    for index, layer in enumerate(inner.layers):
        attn, mlp = layer.self_attn, layer.mlp
        x = layer.input_layernorm(hidden)
        q, k, v = (project(index, getattr(attn, n), n, x) for n in PROJECTIONS[:3])
        q, k, v = (t.view(batch, seq, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(batch, seq, -1)
        hidden = hidden + project(index, attn.o_proj, "o_proj", att)
        x = layer.post_attention_layernorm(hidden)
        gate, up = project(index, mlp.gate_proj, "gate_proj", x), project(index, mlp.up_proj, "up_proj", x)
        hidden = hidden + project(index, mlp.down_proj, "down_proj", F.silu(gate) * up)
    return model.lm_head(inner.norm(hidden))


def test_forward_is_the_cross_layer_recurrence(one_cpu_thread):
    torch.manual_seed(0)
    model = CRNetForCausalLM(tiny_config(num_hidden_layers=4)).eval()
    with torch.no_grad():  # β of both signs, and away from 1/√2, so that the sign and the scale both matter
        for i, param in enumerate(p for n, p in model.named_parameters() if n.endswith("beta")):
            param.fill_((-1) ** i * (0.3 + 0.05 * i))
    ids = torch.randint(0, VOCAB, (2, 11))
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=ids).logits, _reference_logits(model, ids), rtol=1e-5, atol=1e-5)


def test_the_cross_layer_chain_is_causal(one_cpu_thread):
    """Y_{l−1} at position t comes from tokens ≤ t only: changing later tokens leaves earlier logits unchanged."""
    torch.manual_seed(0)
    model = CRNetForCausalLM(tiny_config(num_hidden_layers=4)).eval()
    ids = torch.randint(0, VOCAB, (1, 12))
    changed = ids.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(after[:, :7], before[:, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 7:], before[:, 7:])


def test_layer_one_is_full_rank_and_the_others_low_rank():
    config = tiny_config()
    model = CRNetForCausalLM(config)
    first, second = model.model.layers[0], model.model.layers[1]
    up = first.mlp.up_proj
    assert {n for n, _ in up.named_parameters()} == {"weight"} and up.weight.shape == (176, 64)
    assert torch.linalg.matrix_rank(up.weight.detach()).item() == 64  # full rank: min(176, 64)
    low = second.mlp.up_proj
    assert {n for n, _ in low.named_parameters()} == {"weight_a", "weight_b", "beta"}
    assert low.weight_a.shape == (16, 64) and low.weight_b.shape == (176, 16) and low.beta.shape == ()
    assert torch.linalg.matrix_rank((low.weight_b @ low.weight_a).detach()).item() == 16


def _closed_form_parameters(d: int, f: int, layers: int, rank: int, vocab: int) -> int:
    """Layer 1: 4d² + 3df; layers 2..L: r(11d + 3f) (q, k, v, o are d×d; gate, up d→f; down f→d) + 7 scalars β;
    2 RMSNorms per layer and a final one; untied embeddings and head (V×d each)."""
    first = 4 * d * d + 3 * d * f
    later = rank * (11 * d + 3 * f) + 7
    return first + (layers - 1) * later + layers * 2 * d + d + 2 * vocab * d


@pytest.mark.parametrize("size, d, f, layers, rank", [("60m", 512, 1376, 8, 128), ("1b", 2048, 5461, 24, 448)])
def test_parameter_count_is_the_closed_form_and_rank_448_is_the_papers_1b(size, d, f, layers, rank):
    config = crnet_config(size, 32000, rank=rank)
    with torch.device("meta"):  # shapes only: a 1B model is not allocated
        model = AutoModelForCausalLM.from_config(config)
    counted = count_parameters(model)
    assert counted == _closed_form_parameters(d, f, layers, rank, 32000)
    if size == "1b":
        # The paper: 583M, −56.5 % against LLaMA-1B (1339.1M). r = 448 gives 582.4M, −56.50 %; r = 512 gives 639.7M.
        assert abs(counted - 583e6) < 1e6
        assert round(1 - counted / 1_339_080_704, 3) == 0.565
        assert round(_closed_form_parameters(d, f, layers, 512, 32000) / 1e6) == 640


def test_auto_classes_save_load_and_generate(tmp_path, one_cpu_thread):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config())
    assert type(model) is CRNetForCausalLM and type(AutoConfig.for_model("crnet")) is CRNetConfig
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is CRNetForCausalLM and loaded.config.rank == 16
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, logits, rtol=0, atol=0)
        as_recompute = AutoModelForCausalLM.from_pretrained(tmp_path, recompute=True)
        assert as_recompute.config.recompute and as_recompute.state_dict().keys() == model.state_dict().keys()
        torch.testing.assert_close(as_recompute(input_ids=ids).logits, logits, rtol=0, atol=0)
    # generate with the KV cache = greedy decoding written out without it
    prompt = ids[:1, :4]
    expected = prompt
    with torch.no_grad():
        for _ in range(5):
            next_id = model(input_ids=expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    generated = loaded.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
    assert torch.equal(generated, expected)


def test_init_keeps_every_layers_projections_at_llamas_variance_and_training_starts_stably(one_cpu_thread):
    torch.manual_seed(0)
    config = tiny_config(hidden_size=128, intermediate_size=352, num_hidden_layers=8, rank=32)
    model = CRNetForCausalLM(config)
    low = model.model.layers[3].mlp.up_proj
    expected_std = (0.02**2 / (2 * 32)) ** 0.25  # Var[(AB)_ij] = r·s⁴ = σ²/2
    assert low.weight_a.std().item() == pytest.approx(expected_std, rel=0.05)
    assert low.beta.item() == pytest.approx(2**-0.5)
    assert (low.weight_b @ low.weight_a).var().item() == pytest.approx(0.02**2 / 2, rel=0.1)
    outputs = {}
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.q_proj.register_forward_hook(lambda m, args, out, i=index: outputs.__setitem__(i, out))
    ids = torch.randint(0, VOCAB, (2, 16))
    losses = []
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(10):
        loss = model(input_ids=ids, labels=ids).loss
        if step == 0:  # q's output variance stays that of layer 1 down the stack (β = 1 would grow it ~L-fold)
            ratios = [outputs[i].var().item() / outputs[0].var().item() for i in range(8)]
            assert all(0.5 < r < 2 for r in ratios), ratios
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0] - 1.0, losses


@pytest.mark.parametrize("recompute", [False, True])
def test_beta_at_zero_gives_finite_outputs_and_gradients(recompute, one_cpu_thread):
    torch.manual_seed(0)
    model = CRNetForCausalLM(tiny_config(recompute=recompute)).train()
    with torch.no_grad():
        model.model.layers[1].self_attn.k_proj.beta.zero_()  # c = +ε: sgn(0) taken as +1
        model.model.layers[2].mlp.down_proj.beta.fill_(-1e-12)
    assert model.model.layers[1].self_attn.k_proj.scale().item() == pytest.approx(1e-6)
    ids = torch.randint(0, VOCAB, (2, 8))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    assert model.model.layers[1].self_attn.k_proj.beta.grad.abs().item() > 0  # ∂c/∂β = 1 at 0 as well


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"rank": 64}, "rank 64 must be below the smaller side .* q_proj is 64×64, so rank must be < 64"),
        ({"rank": 40, "num_key_value_heads": 2}, "k_proj is 64×32, so rank must be < 32"),
        ({"beta_eps": 0.0}, "beta_eps must be > 0"),
        ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
        ({"attention_bias": True}, "CR-Net has no biases"),
        ({"recompute": True, "attention_dropout": 0.1}, "recompute .* attention_dropout = 0"),
    ],
)
def test_bad_config_is_a_value_error_naming_it(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_checkpoint_set_counts_down_from_the_last_layer_and_leaves_out_layer_one():
    assert tiny_config(num_hidden_layers=24).checkpoint_layers() == (8, 16, 24)  # |𝒜| = L/8 at the default
    assert tiny_config(num_hidden_layers=8, checkpoint_every=3).checkpoint_layers() == (2, 5, 8)
    assert tiny_config(num_hidden_layers=9, checkpoint_every=8).checkpoint_layers() == (9,)  # 1 ∉ 𝒜


def test_default_rank_is_a_quarter_of_the_hidden_size_and_a_local_llama_config_converts(tmp_path):
    from hf_pept.models import llama_config

    assert tiny_config().rank == 16 and crnet_config("1b", 32000).rank == 512
    llama_config("20m", 1000).save_pretrained(tmp_path)
    config = crnet_config(str(tmp_path), 512, rank=32, recompute=True)
    assert type(config) is CRNetConfig and config.vocab_size == 512 and config.recompute
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers, config.rank) == (256, 688, 4, 32)
