"""The GPT decoder: shapes, causality, initialisation, learning, config errors."""

import dataclasses
import math

import pytest
import torch

from minigpt.model import GPT, ModelConfig

TINY = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 11, (3, 8))
    logits, loss = model(idx)
    assert logits.shape == (3, 8, 11) and loss is None
    logits, loss = model(idx, idx)
    assert loss.ndim == 0
    # at init the prediction is near uniform: loss close to ln(vocab)
    assert abs(loss.item() - math.log(11)) < 0.3


def test_returns_every_layers_attention():
    model = GPT(TINY).eval()
    logits, loss, att = model(torch.randint(0, 11, (2, 6)), return_attention=True)
    assert len(att) == 2 and all(a.shape == (2, 2, 6, 6) for a in att)
    torch.testing.assert_close(att[1].sum(-1), torch.ones(2, 2, 6))


def test_causality_future_tokens_do_not_change_past_logits():
    torch.manual_seed(1)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 11, (1, 8))
    t = 4
    changed = idx.clone()
    changed[0, t + 1 :] = (changed[0, t + 1 :] + 3) % 11
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[0, : t + 1], b[0, : t + 1])
    assert not torch.allclose(a[0, t + 1 :], b[0, t + 1 :])


def test_too_long_input_is_a_clear_error():
    with pytest.raises(ValueError, match="block_size is only 8"):
        GPT(TINY)(torch.zeros(1, 9, dtype=torch.long))


def test_lm_head_tied_or_not():
    tied = GPT(TINY)
    assert tied.lm_head.weight is tied.wte.weight
    untied = GPT(TINY.replace(tie_weights=False))
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_params() - tied.num_params() == 11 * 16


def test_empty_builds_without_weights_or_random_fills_and_loads_the_same_model(monkeypatch):
    from minigpt import model as model_module

    cfg = TINY.replace(attn_score="additive")  # AdditiveScore fills its own parameters too
    torch.manual_seed(0)
    source = GPT(cfg).eval()
    empty = GPT.empty(cfg)
    assert all(p.is_meta for p in empty.parameters()) and empty.lm_head.weight is empty.wte.weight
    empty.load_state_dict(source.state_dict(), assign=True)
    assert empty.lm_head.weight is not empty.wte.weight  # assign=True gives each key its own Parameter
    empty.tie_head()
    assert empty.lm_head.weight is empty.wte.weight and empty.num_params() == source.num_params()
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(empty.eval()(idx)[0], source(idx)[0], rtol=0, atol=0)

    def broken(config, layer_idx):
        raise RuntimeError("no memory")

    monkeypatch.setattr(model_module, "Block", broken)
    with pytest.raises(RuntimeError, match="no memory"):  # a failed build leaves nothing switched off
        GPT.empty(cfg)
    monkeypatch.undo()
    normal = GPT(cfg)  # a normal build draws its weights again, on the CPU
    assert normal.wte.weight.device.type == "cpu" and normal.wte.weight.std() > 0.01
    assert normal.h[0].attn.additive.w.std() > 0.005


def test_gpt2_initialisation():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=256)
    model = GPT(cfg)
    assert abs(model.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    expected = 0.02 / math.sqrt(2 * 8)
    for block in model.h:
        assert abs(block.attn.c_proj.weight.std().item() - expected) < 0.001
        assert abs(block.mlp.c_proj.weight.std().item() - expected) < 0.001
    assert torch.all(model.h[0].mlp.c_fc.bias == 0)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = GPT(TINY)
    idx = torch.randint(0, 11, (4, 8))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, first = model(x, y)
    for _ in range(150):
        _, loss = model(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first.item(), (first.item(), loss.item())


def test_sdpa_model_matches_manual_model():
    torch.manual_seed(2)
    manual = GPT(TINY).eval()
    fused = GPT(TINY.replace(attn_impl="sdpa")).eval()
    fused.load_state_dict(manual.state_dict())
    idx = torch.randint(0, 11, (2, 8))
    torch.testing.assert_close(fused(idx)[0], manual(idx)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_head=3, n_embd=16), "not divisible by model.n_head=3"),
        (dict(n_layer=0), "model.n_layer must be a positive integer"),
        (dict(vocab_size=0), "model.vocab_size must be a positive integer"),
        (dict(dropout=1.0), r"model.dropout must be in \[0, 1\)"),
        (dict(dropout=-0.1), r"model.dropout must be in \[0, 1\)"),
        (dict(d_head=0), "model.d_head must be a positive integer"),
        (dict(attn_impl="flash"), "model.attn_impl must be 'manual' or 'sdpa'"),
        (dict(attn_impl="sdpa", attn_score="additive"), "use model.attn_impl='manual'"),
        (dict(attn_window=0), "model.attn_window must be a positive integer"),
    ],
)
def test_bad_configs_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**kwargs)


def test_d_head_fixes_indivisible_width():
    cfg = ModelConfig(n_head=3, n_embd=16, d_head=8)
    assert cfg.head_size == 8 and cfg.attn_dim == 24


def test_presets_by_name():
    cfg = ModelConfig.from_preset("gpt3-medium")
    assert (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size, cfg.block_size, cfg.vocab_size) == (
        24, 1024, 16, 64, 2048, 50257,
    )
    assert ModelConfig.from_preset("nano", dropout=0.1).dropout == 0.1
    with pytest.raises(ValueError, match="model.preset='gpt5' is unknown; valid presets: micro, nano"):
        ModelConfig.from_preset("gpt5")


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TINY.n_layer = 3  # type: ignore[misc]


def test_attention_maps_of_one_sequence():
    model = GPT(TINY.replace(dropout=0.5)).train()
    maps = model.attention_maps([1, 2, 3, 4, 5])
    assert maps.shape == (2, 2, 5, 5) and maps.dtype == torch.float32
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 5))  # eval mode: no dropout on the weights
    torch.testing.assert_close(maps, model.attention_maps(torch.tensor([1, 2, 3, 4, 5])))  # deterministic
    assert model.training  # the caller's mode is restored
