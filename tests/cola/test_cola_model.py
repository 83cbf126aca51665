"""CoLA as a transformers model: the factorized linear against its formula, the parameter count against the closed
form (the paper's 609M at 1B), the Auto classes, save/load, generate, the initialisation and the config checks."""

import math

import pytest
import torch
import torch.nn.functional as F
from cola_helpers import VOCAB, tiny_config
from transformers import AutoConfig, AutoModelForCausalLM

from hf_pept.cola import CoLAConfig, CoLAForCausalLM, CoLALinear
from hf_pept.models import cola_config, count_parameters


def test_cola_linear_is_b_silu_a_x_plus_bias():
    layer = CoLALinear(in_features=37, out_features=23, rank=5, activation="silu", bias=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()
    x = torch.randn(3, 7, 37)
    a, b, bias = layer.weight_a, layer.weight_b, layer.bias  # A: r×n, B: m×r
    z = torch.einsum("rn,btn->btr", a, x)
    expected = torch.einsum("mr,btr->btm", b, z * torch.sigmoid(z)) + bias
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_only_lr_act_drops_swiglus_outer_silu():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 64)
    for only_lr_act in (True, False):
        mlp = CoLAForCausalLM(tiny_config(only_lr_act=only_lr_act)).model.layers[0].mlp
        gate, up = mlp.gate_proj(x), mlp.up_proj(x)
        inner = gate * up if only_lr_act else F.silu(gate) * up
        torch.testing.assert_close(mlp(x), mlp.down_proj(inner))


def _closed_form_parameters(d: int, f: int, layers: int, rank: int, vocab: int) -> int:
    """r(m + n) per factorized linear: q, k, v, o are d×d, gate and up f×d, down d×f; 2 RMSNorms per layer and a
    final one; untied embeddings and head (V×d each)."""
    per_layer = 4 * rank * (d + d) + 3 * rank * (d + f) + 2 * d
    return layers * per_layer + d + 2 * vocab * d


@pytest.mark.parametrize("size, d, f, layers, rank", [("60m", 512, 1376, 8, 128), ("1b", 2048, 5461, 24, 512)])
def test_parameter_count_is_the_closed_form_and_the_papers_609m_at_1b(size, d, f, layers, rank):
    config = cola_config(size, 32000)
    assert config.rank == rank
    with torch.device("meta"):  # shapes only: a 1B model is not allocated
        model = AutoModelForCausalLM.from_config(config)
    counted = count_parameters(model)
    assert counted == _closed_form_parameters(d, f, layers, rank, 32000)
    if size == "1b":
        assert round(counted / 1e6) == 609  # the paper's CoLA-1B (full-rank LLaMA-1B: 1339M)


def test_auto_classes_save_load_and_generate(tmp_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config())
    assert type(model) is CoLAForCausalLM and type(AutoConfig.for_model("cola")) is CoLAConfig
    model.eval()
    ids = torch.randint(0, VOCAB, (2, 12))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert type(loaded) is CoLAForCausalLM and loaded.config.rank == 16
    with torch.no_grad():
        logits = model(input_ids=ids).logits
        torch.testing.assert_close(loaded(input_ids=ids).logits, logits, rtol=0, atol=0)
        # The same weights as CoLA-M: same keys, same outputs.
        as_cola_m = AutoModelForCausalLM.from_pretrained(tmp_path, cola_m=True)
        assert as_cola_m.config.cola_m and as_cola_m.state_dict().keys() == model.state_dict().keys()
        torch.testing.assert_close(as_cola_m(input_ids=ids).logits, logits, rtol=0, atol=0)
    # generate with the KV cache = greedy decoding written out without it, for CoLA and CoLA-M alike
    prompt = ids[:1, :4]
    expected = prompt
    with torch.no_grad():
        for _ in range(5):
            next_id = model(input_ids=expected).logits[:, -1].argmax(-1, keepdim=True)
            expected = torch.cat([expected, next_id], dim=1)
    for generator in (loaded, as_cola_m):
        generated = generator.generate(prompt, max_new_tokens=5, do_sample=False, use_cache=True, pad_token_id=0)
        assert torch.equal(generated, expected)


def test_factors_start_at_the_papers_scale_and_the_embeddings_at_llamas():
    torch.manual_seed(0)
    config = tiny_config(hidden_size=256, intermediate_size=688, num_attention_heads=4, rank=64)
    model = CoLAForCausalLM(config)
    up = model.model.layers[0].mlp.up_proj  # m = 688, n = 256
    expected = (64 * (688 + 256)) ** -0.25  # (r(m + n))^(-1/4)
    for factor in (up.weight_a, up.weight_b):
        assert factor.std().item() == pytest.approx(expected, rel=0.05)
        assert factor.mean().abs().item() < 0.1 * expected
    assert model.model.embed_tokens.weight.std().item() == pytest.approx(0.02, rel=0.05)
    # Var[(BA)_ij] = r·σ⁴ = 1/(m + n)
    assert (up.weight_b @ up.weight_a).var().item() == pytest.approx(1 / (688 + 256), rel=0.1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"rank": 0}, "rank must be an integer >= 1"),
        ({"rank": -3}, "rank must be an integer >= 1"),
        ({"rank": 64}, "rank 64 must be below the smaller side .* q_proj is 64×64, so rank must be < 64"),
        ({"rank": 40, "num_key_value_heads": 2}, "k_proj is 32×64, so rank must be < 32"),
        ({"cola_m": True, "attention_dropout": 0.1}, "CoLA-M .* attention_dropout = 0"),
    ],
)
def test_bad_config_is_a_value_error_naming_it(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


def test_a_local_llama_config_becomes_its_cola_shape(tmp_path):
    from hf_pept.models import llama_config

    llama_config("20m", 1000).save_pretrained(tmp_path)
    config = cola_config(str(tmp_path), 512, rank=32, only_lr_act="true")
    assert type(config) is CoLAConfig and config.vocab_size == 512
    assert (config.hidden_size, config.intermediate_size, config.num_hidden_layers) == (256, 688, 4)
    assert config.rank == 32 and config.only_lr_act is True
    with pytest.raises(ValueError, match="is neither a size"):
        cola_config(str(tmp_path / "missing"), 512)


def test_default_rank_is_a_quarter_of_the_hidden_size_and_sizes_follow_the_paper():
    assert tiny_config().rank == 16
    assert cola_config("60m", 32000).only_lr_act is False and cola_config("350m", 32000).only_lr_act is True
    assert cola_config("60m", 32000, only_lr_act="true").only_lr_act is True
    assert math.isclose(cola_config("1b", 32000).rank / 2048, 0.25)
