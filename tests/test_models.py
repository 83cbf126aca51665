"""The named LLaMA sizes against the papers' shapes, and parameter counts against the closed-form count."""

import json

import pytest
import torch

from hf_pept.models import MODEL_SIZES, build_llama, build_model, count_parameters, llama_config

# GaLore paper (Zhao et al. 2024), Table 11: hidden, intermediate, heads, layers.
PAPER_SHAPES = {
    "60m": (512, 1376, 8, 8),
    "130m": (768, 2048, 12, 12),
    "350m": (1024, 2736, 16, 24),
    "1b": (2048, 5461, 32, 24),
}


def llama_parameter_count(vocab, d, ff, layers):
    """Untied embeddings and head (2·V·d); per layer q,k,v,o (4·d²), gate/up/down (3·d·ff), two RMSNorms (2·d);
    the final RMSNorm (d)."""
    return 2 * vocab * d + layers * (4 * d * d + 3 * d * ff + 2 * d) + d


@pytest.mark.parametrize("size", sorted(PAPER_SHAPES))
def test_paper_shapes(size):
    config = llama_config(size, vocab_size=32000)
    shape = (config.hidden_size, config.intermediate_size, config.num_attention_heads, config.num_hidden_layers)
    assert shape == PAPER_SHAPES[size]


@pytest.mark.parametrize("size", ["tiny", "20m", "60m", "130m", "350m", "1b"])
def test_parameter_count_matches_closed_form(size):
    shape = MODEL_SIZES[size]
    with torch.device("meta"):
        model = build_llama(size, vocab_size=32000)
    expected = llama_parameter_count(32000, shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers)
    assert count_parameters(model) == expected


def test_named_sizes_are_near_their_names_at_the_papers_vocabulary():
    # The names count parameters at the papers' 32k vocabulary; within 15 % of the name's figure.
    for size, millions in (("60m", 60), ("130m", 130), ("350m", 350), ("1b", 1300)):
        shape = MODEL_SIZES[size]
        count = llama_parameter_count(32000, shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers)
        assert abs(count / 1e6 - millions) / millions < 0.15, (size, count)


def test_unknown_size_and_bad_vocab_are_clear_errors():
    with pytest.raises(ValueError, match="valid sizes"):
        llama_config("7b", vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size"):
        llama_config("tiny", vocab_size=0)


def test_overrides_reach_the_config():
    config = llama_config("tiny", vocab_size=300, max_position_embeddings=128, num_hidden_layers=1)
    assert (config.num_hidden_layers, config.max_position_embeddings, config.vocab_size) == (1, 128, 300)


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = build_llama("tiny", vocab_size=300, seed=7)
    after = torch.rand(1)
    second = build_llama("tiny", vocab_size=300, seed=7)
    assert torch.equal(before, after)
    for a, b in zip(first.parameters(), second.parameters()):
        assert torch.equal(a, b)


def test_build_model_from_local_config_and_weights(tmp_path):
    model = build_llama("tiny", vocab_size=300, seed=1)
    model.config.to_json_file(tmp_path / "config.json")
    from_config = build_model(str(tmp_path / "config.json"), vocab_size=300, seed=2)
    assert count_parameters(from_config) == count_parameters(model)
    weights_dir = tmp_path / "weights"
    model.save_pretrained(weights_dir)
    loaded = build_model(str(weights_dir), vocab_size=300)
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert json.loads((weights_dir / "config.json").read_text())["hidden_size"] == 64


def test_missing_path_is_a_clear_error():
    with pytest.raises(ValueError, match="nothing is downloaded"):
        build_model("meta-llama/Llama-2-7b", vocab_size=300)
