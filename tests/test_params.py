"""The parameter counter against built models and against the GPT-3 paper."""

import pytest

from minigpt.model import GPT, ModelConfig, load_presets
from minigpt.params import count_params, flops_per_token, format_param_table, main, training_memory

CONFIGS = [
    ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16),
    ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False),
    ModelConfig(vocab_size=97, block_size=32, n_layer=3, n_head=3, n_embd=24, d_head=10, bias=False),
    ModelConfig(vocab_size=50, block_size=16, n_layer=1, n_head=4, n_embd=32, d_ff=40, tie_weights=False),
    ModelConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, attn_score="additive"),
    ModelConfig.from_preset("nano"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_count_equals_numel(cfg):
    model = GPT(cfg)
    c = count_params(cfg)
    assert c["total"] == sum(p.numel() for p in model.parameters())
    assert c["token_embedding"] == model.wte.weight.numel()
    assert c["layer.total"] == sum(p.numel() for p in model.h[0].parameters())
    assert c["layer.mlp_fc"] == sum(p.numel() for p in model.h[0].mlp.c_fc.parameters())
    assert c["embedding"] + c["non_embedding"] == c["total"]


def test_attention_per_head_is_one_heads_share():
    cfg = ModelConfig(n_layer=1, n_head=4, n_embd=32, bias=True)
    c = count_params(cfg)
    attn_weights = c["layer.attn_q"] + c["layer.attn_k"] + c["layer.attn_v"] + c["layer.attn_out"]
    shared_out_bias = 32
    assert c["attention_per_head"] * 4 + shared_out_bias == attn_weights


def test_gpt2_small_is_124m():
    assert count_params(ModelConfig.from_preset("gpt2"))["total"] == 124_439_808


@pytest.mark.parametrize("name", [n for n in load_presets() if n.startswith("gpt3-")])
def test_gpt3_presets_match_paper_within_two_percent(name):
    entry = load_presets()[name]
    total = count_params(ModelConfig.from_preset(name))["total"]
    assert abs(total - entry["published_params"]) / entry["published_params"] < 0.02


def test_gpt3_head_sizing_is_consistent():
    for name in [n for n in load_presets() if n.startswith("gpt3-")]:
        cfg = ModelConfig.from_preset(name)
        assert cfg.n_head * cfg.head_size == cfg.n_embd, name
    # the literal XL row (24 heads of 128) would be ~17% off the published 1.3B
    literal_xl = ModelConfig.from_preset("gpt3-xl", n_head=24, d_head=128)
    assert count_params(literal_xl)["total"] > 1.5e9


def test_count_works_for_175b_without_allocating():
    c = count_params(ModelConfig.from_preset("gpt3-175b"))
    assert 174e9 < c["total"] < 176e9


def test_flops_formula():
    cfg = ModelConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=16)
    f = flops_per_token(cfg)
    # by hand: per block 4*16*16 + 4*16 (attention) + 2*16*64 + 64 + 16 (MLP) + 4*16 (norms) = 3,280;
    # 2 blocks + ln_f 32 + LM head 10*16 = 6,752 weights in matmuls
    assert f["params_in_matmuls"] == 6_752
    assert f["dense"] == 6 * 6_752 and f["attention"] == 12 * 2 * 16 * 8
    assert f["total"] == f["dense"] + f["attention"]


def test_memory_estimate_state_is_16_bytes_per_param():
    cfg = ModelConfig.from_preset("gpt2")
    m = training_memory(cfg, batch_size=4)
    p = count_params(cfg)["total"]
    for kind in ("fp32", "bf16-mixed"):
        assert m[kind]["weights"] + m[kind]["gradients"] + m[kind]["adamw"] == 16 * p
    assert m["bf16-mixed"]["activations"] < m["fp32"]["activations"]


def test_table_and_cli(capsys):
    table = format_param_table(ModelConfig.from_preset("gpt2"))
    assert "124.44M" in table and "tied to wte" in table
    assert main(["--preset", "gpt3-175b"]) == 0
    out = capsys.readouterr().out
    assert "174.60B" in out and "175.00B" in out and "gpt3-13b" in out
    assert main(["--preset", "nope"]) == 2
    assert "valid presets" in capsys.readouterr().err
