"""The hand-written attention: worked examples, masking, and the fused fast path."""

import math

import pytest
import torch

from minigpt.attention import CausalSelfAttention, causal_mask, scaled_dot_product_attention
from minigpt.model import ModelConfig

KEYS = torch.tensor([[0.8, 0.6], [0.2, 0.9], [0.0, 0.4]])
VALUES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])


def test_worked_example_weights_and_output():
    out, w = scaled_dot_product_attention(torch.tensor([[1.0, 0.5]]), KEYS, VALUES)
    torch.testing.assert_close(w, torch.tensor([[0.44313, 0.32236, 0.23450]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out, torch.tensor([[0.56039, 0.43961]]), atol=1e-5, rtol=0)


def test_worked_example_second_query():
    _, w = scaled_dot_product_attention(torch.tensor([[0.1, 1.2]]), KEYS, VALUES)
    torch.testing.assert_close(w, torch.tensor([[0.32962, 0.40751, 0.26287]]), atol=1e-5, rtol=0)


def test_scale_one_is_plain_dot_product():
    q = torch.tensor([[1.0, 0.5]])
    _, w = scaled_dot_product_attention(q, KEYS, VALUES, scale=1.0)
    expected = torch.softmax(q @ KEYS.T, dim=-1)
    torch.testing.assert_close(w, expected)
    _, w_scaled = scaled_dot_product_attention(q, KEYS, VALUES)
    assert not torch.allclose(w, w_scaled)


def test_causal_weights_are_zero_above_diagonal_and_rows_sum_to_one():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 7, 5) for _ in range(3))
    out, w = scaled_dot_product_attention(q, k, v, causal=True)
    assert out.shape == (2, 3, 7, 5) and w.shape == (2, 3, 7, 7)
    upper = torch.triu(torch.ones(7, 7, dtype=torch.bool), diagonal=1)
    assert torch.all(w[..., upper] == 0.0)  # exactly zero, not merely small
    assert torch.all(w[..., ~upper] > 0.0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 7))
    # the first query can only see itself, so it copies the first value
    torch.testing.assert_close(out[..., 0, :], v[..., 0, :])


def test_explicit_mask_matches_causal_flag():
    torch.manual_seed(1)
    q, k, v = (torch.randn(4, 6, 3) for _ in range(3))
    allowed = torch.tril(torch.ones(6, 6, dtype=torch.bool))
    a = scaled_dot_product_attention(q, k, v, mask=allowed)
    b = scaled_dot_product_attention(q, k, v, causal=True)
    torch.testing.assert_close(a, b)


def test_causal_mask_with_cached_keys_offsets_queries():
    # 2 new queries after 3 cached keys sit at positions 3 and 4
    m = causal_mask(2, 5)
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]


def test_band_mask():
    m = causal_mask(6, 6, window=3)
    for i in range(6):
        for j in range(6):
            assert m[i, j].item() == (i - 3 < j <= i), (i, j)
    assert m.sum(-1).tolist() == [1, 2, 3, 3, 3, 3]


def test_banded_layers_alternate():
    cfg = ModelConfig(n_layer=4, attn_window=8)
    assert [cfg.window_for_layer(i) for i in range(4)] == [None, 8, None, 8]
    cfg_all = cfg.replace(attn_window_layers="all")
    assert [cfg_all.window_for_layer(i) for i in range(4)] == [8, 8, 8, 8]
    assert ModelConfig(n_layer=4).window_for_layer(1) is None


def test_banded_attention_ignores_far_keys():
    torch.manual_seed(2)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, attn_window=3, attn_window_layers="all")
    attn = CausalSelfAttention(cfg, layer_idx=0).eval()
    x = torch.randn(1, 10, 16)
    _, w = attn(x, need_weights=True)
    assert torch.all(w[0, :, 5, :3] == 0.0) and torch.all(w[0, :, 5, 3:6] > 0)
    # changing a token outside every query's band leaves the last output unchanged
    y1, _ = attn(x)
    x2 = x.clone()
    x2[0, 0] += 5.0
    y2, _ = attn(x2)
    torch.testing.assert_close(y1[0, 3:], y2[0, 3:])
    assert not torch.allclose(y1[0, 0], y2[0, 0])


@pytest.mark.parametrize("score", ["scaled_dot", "dot"])
@pytest.mark.parametrize("window", [None, 4])
def test_sdpa_fast_path_matches_hand_written(score, window):
    torch.manual_seed(3)
    cfg = ModelConfig(n_head=4, n_embd=32, block_size=32, attn_score=score, attn_window=window, attn_window_layers="all")
    manual = CausalSelfAttention(cfg).eval()
    fused = CausalSelfAttention(cfg.replace(attn_impl="sdpa")).eval()
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, 20, 32)
    y_manual, w = manual(x, need_weights=True)
    y_fused, none = fused(x)
    assert none is None and w.shape == (3, 4, 20, 20)
    torch.testing.assert_close(y_fused, y_manual, atol=1e-5, rtol=1e-5)


def test_sdpa_path_still_returns_weights_when_asked():
    cfg = ModelConfig(n_head=2, n_embd=16, attn_impl="sdpa")
    _, w = CausalSelfAttention(cfg).eval()(torch.randn(1, 5, 16), need_weights=True)
    assert w.shape == (1, 2, 5, 5)


def test_weights_not_kept_unless_asked():
    cfg = ModelConfig(n_head=2, n_embd=16)
    _, w = CausalSelfAttention(cfg)(torch.randn(1, 5, 16))
    assert w is None


def test_additive_score_is_causal_and_learnable():
    torch.manual_seed(4)
    cfg = ModelConfig(n_head=2, n_embd=16, attn_score="additive")
    attn = CausalSelfAttention(cfg)
    x = torch.randn(2, 6, 16)
    y, w = attn(x, need_weights=True)
    assert torch.all(w[..., torch.triu(torch.ones(6, 6, dtype=torch.bool), 1)] == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 2, 6))
    y.sum().backward()
    assert attn.additive.w.grad is not None and attn.additive.w.grad.abs().sum() > 0


def test_non_square_heads():
    # GPT-3 style: d_head set on its own, n_head * d_head != n_embd
    cfg = ModelConfig(n_head=3, n_embd=16, d_head=8)
    attn = CausalSelfAttention(cfg)
    assert attn.c_attn.weight.shape == (3 * 24, 16) and attn.c_proj.weight.shape == (16, 24)
    y, w = attn(torch.randn(2, 5, 16), need_weights=True)
    assert y.shape == (2, 5, 16) and w.shape == (2, 3, 5, 5)


def test_default_scale_is_inverse_sqrt_head_size():
    q = torch.randn(1, 4, 9)
    k = torch.randn(1, 4, 9)
    _, w = scaled_dot_product_attention(q, k, torch.randn(1, 4, 2))
    torch.testing.assert_close(w, torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(9), -1))
