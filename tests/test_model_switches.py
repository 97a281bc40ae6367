"""The model switches of "A CPU speedrun": QK-norm, rotary positions, ReLU², zero-initialised output
projections and value embeddings. Each is off by default and leaves the default model as it was; each does
what its docstring says; the fused path, the KV cache, the sampler's copy, attention maps, head roles,
the parameter counter, checkpoints, resume and GPT-2 export all work with it on."""

import io
import re

import pytest
import torch
import torch.nn.functional as F

from minigpt import hf
from minigpt.attention import rms_norm, rotary_angles, rotate
from minigpt.checkpoint import load_checkpoint, load_model
from minigpt.config import ModelConfig
from minigpt.errors import UserError
from minigpt.generate import generate_ids, make_caches
from minigpt.model import GPT
from minigpt.params import count_params
from minigpt.roles import ROLES, head_roles, induction_probe
from minigpt.run import resolve, train
from minigpt.tokenizer import CharTokenizer
from minigpt.trainer import TrainConfig, configure_optimizer, hidden_matrices
from tests.test_run import tiny_args

TINY = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)
SWITCHES = {
    "rotary": dict(pos_emb="rotary"),
    "qk_norm": dict(qk_norm=True),
    "value_embeds": dict(value_embeds=True),
    "relu2": dict(activation="relu2"),
    "zero_init_proj": dict(zero_init_proj=True),
    "all": dict(pos_emb="rotary", qk_norm=True, value_embeds=True, activation="relu2", zero_init_proj=True),
}
each_switch = pytest.mark.parametrize("switch", list(SWITCHES))


def model_with(switch: str, config: ModelConfig = TINY, seed: int = 0, **changes) -> GPT:
    """A tiny model with one switch on, weights larger than the 0.02 init (and the zero projections filled)
    so that attention is peaked and every path does real work."""
    torch.manual_seed(seed)
    model = GPT(config.replace(**{**SWITCHES[switch], **changes}))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(4 * p if p.abs().sum() > 0 else 0.3 * torch.randn_like(p))
    return model


# -- the default model is untouched -----------------------------------------------------------------------


def gpt2_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The default model's logits, written from GPT-2's definition with the model's own modules."""
    B, T = idx.shape
    C, nh = model.config.n_embd, model.config.n_head
    x = model.wte(idx) + model.wpe(torch.arange(T))
    for block in model.h:
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, C // nh).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
        x = x + block.attn.c_proj(y)
        x = x + block.mlp.c_proj(F.gelu(block.mlp.c_fc(block.ln_2(x))))
    return model.lm_head(model.ln_f(x))


def test_the_default_model_is_gpt2_with_no_new_parameters():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    modules = ["ln_1", "attn.c_attn", "attn.c_proj", "ln_2", "mlp.c_fc", "mlp.c_proj"]
    layer = [f"{m}.{p}" for m in modules for p in ("weight", "bias")]
    expected = ["wte.weight", "wpe.weight", *(f"h.{i}.{n}" for i in range(2) for n in layer)]
    assert list(model.state_dict()) == [*expected, "ln_f.weight", "ln_f.bias", "lm_head.weight"]
    idx = torch.randint(0, 11, (3, 8))
    torch.testing.assert_close(model(idx)[0], gpt2_forward(model, idx))
    # the switches' defaults are the model: spelling them out changes no weight and no logit
    torch.manual_seed(0)
    spelled = GPT(TINY.replace(pos_emb="learned", qk_norm=False, value_embeds=False, zero_init_proj=False)).eval()
    for (name, p), q in zip(model.named_parameters(), spelled.parameters()):
        assert torch.equal(p, q), name
    proj = model.h[0].mlp.c_proj.weight
    assert 0.5 * 0.02 / 2 < proj.std() < 1.5 * 0.02 / 2  # GPT-2's scaled init, 0.02 / sqrt(2 * n_layer)


# -- what each switch does --------------------------------------------------------------------------------


def test_rotary_scores_depend_only_on_relative_position():
    torch.manual_seed(0)
    q, k = torch.randn(2, 3, 1, 8), torch.randn(2, 3, 1, 8)

    def score(m: int, n: int) -> torch.Tensor:  # q at position m against k at position n
        cos_m, sin_m = rotary_angles(torch.tensor([m]), 8)
        cos_n, sin_n = rotary_angles(torch.tensor([n]), 8)
        return (rotate(q, cos_m, sin_m) * rotate(k, cos_n, sin_n)).sum(-1)

    torch.testing.assert_close(score(5, 2), score(13, 10))  # same offset, same score
    assert not torch.allclose(score(5, 2), score(5, 3))  # another offset, another score
    torch.testing.assert_close(score(0, 0), (q * k).sum(-1))  # position 0 is no rotation
    cos, sin = rotary_angles(torch.arange(6), 8)
    x = torch.randn(2, 3, 6, 8)
    torch.testing.assert_close(rotate(x, cos, sin).norm(dim=-1), x.norm(dim=-1))  # a rotation keeps lengths


def test_rotary_has_no_position_table_and_refuses_an_odd_head_size():
    model = GPT(TINY.replace(pos_emb="rotary"))
    assert not hasattr(model, "wpe") and not any("wpe" in n for n in model.state_dict())
    with pytest.raises(ValueError, match=r"head size must be even \(got 5\).*model.d_head"):
        ModelConfig(n_embd=20, n_head=4, pos_emb="rotary")
    with pytest.raises(ValueError, match="model.pos_emb must be 'learned' or 'rotary'"):
        ModelConfig(pos_emb="alibi")


def test_rms_norm_gives_unit_rms_times_the_gain():
    x = 100 * torch.randn(4, 2, 5, 8)
    gain = torch.arange(1.0, 3.0).view(2, 1, 1)  # one per head, broadcast over T and hs
    y = rms_norm(x, gain)
    torch.testing.assert_close(y.pow(2).mean(-1).sqrt(), gain.squeeze(-1).expand(4, 2, 5), rtol=1e-4, atol=1e-4)


def test_qk_norm_makes_attention_blind_to_the_scale_of_q_and_k():
    # QK-norm's promise: however large the query and key weights grow (a high learning rate), the logits do
    # not; the maps of a model whose W_Q, W_K are 1000x larger are the same. Without it they collapse.
    ids = torch.randint(0, 11, (8,), generator=torch.Generator().manual_seed(0))
    for qk_norm in (True, False):
        model = model_with("qk_norm", qk_norm=qk_norm)
        before = model.attention_maps(ids)
        with torch.no_grad():
            for block in model.h:
                block.attn.c_attn.weight[: 2 * 16] *= 1000  # the rows that make q and k
                block.attn.c_attn.bias[: 2 * 16] *= 1000
        after = model.attention_maps(ids)
        assert torch.allclose(after, before, atol=1e-4) == qk_norm
    assert model_with("qk_norm").h[0].attn.q_gain.shape == (2 * 8,)  # a gain per head and dimension, flat


def test_relu2_is_relu_squared():
    mlp = GPT(TINY.replace(activation="relu2")).h[0].mlp
    x = torch.tensor([-2.0, -0.1, 0.0, 0.5, 3.0])
    assert mlp.act(x).tolist() == [0.0, 0.0, 0.0, 0.25, 9.0]
    torch.manual_seed(0)
    h = torch.randn(2, 5, 16)
    torch.testing.assert_close(mlp(h), mlp.c_proj(torch.relu(mlp.c_fc(h)) ** 2))


def test_zero_init_proj_starts_every_block_as_the_identity_and_then_learns():
    torch.manual_seed(0)
    default = GPT(TINY)
    torch.manual_seed(0)
    model = GPT(TINY.replace(zero_init_proj=True))
    for (name, p), q in zip(model.named_parameters(), default.parameters()):
        if name.endswith("c_proj.weight"):
            assert not p.any(), name
        else:  # the same seed draws every other weight as the default model does
            assert torch.equal(p, q), name
    idx = torch.randint(0, 11, (4, 8))
    x = model.wte(idx) + model.wpe(torch.arange(8))  # what the blocks leave untouched
    torch.testing.assert_close(model(idx)[0], model.lm_head(model.ln_f(x)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(idx, idx)[1]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(b.attn.c_proj.weight.any() and b.mlp.c_proj.weight.any() for b in model.h)
    assert losses[-1] < losses[0] - 0.1


def test_value_embeddings_are_added_to_the_values():
    model = model_with("value_embeds")
    assert [tuple(e.weight.shape) for e in model.value_embeds] == [(11, 16), (11, 16)]  # vocab x n_head*d_head
    # Zero tables give exactly the model without them (same other weights): the mixing is a plain sum
    plain = GPT(TINY)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("value_embeds")})
    idx = torch.randint(0, 11, (2, 8))
    assert not torch.allclose(model(idx)[0], plain(idx)[0])
    with torch.no_grad():
        for table in model.value_embeds:
            table.weight.zero_()
    torch.testing.assert_close(model(idx)[0], plain(idx)[0])


def test_new_parameters_are_gains_and_embeddings_to_the_optimizer():
    # QK-norm gains and value embeddings get no weight decay (decay would shrink the logits' gain and the rows
    # of rare tokens), and Muon takes only the linear layers' matrices
    model = GPT(TINY.replace(**SWITCHES["all"]))
    decay, no_decay = configure_optimizer(model, TrainConfig(weight_decay=0.1), "cpu").param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    new = {n for n in names.values() if "gain" in n or n.startswith("value_embeds")}
    assert len(new) == 2 * 2 + 2 and new <= {names[id(p)] for p in no_decay["params"]}
    assert not new & {names[id(p)] for p in hidden_matrices(model)}


# -- every path still works with each switch on -------------------------------------------------------------


@each_switch
def test_parameter_counter_counts_every_new_parameter(switch):
    for config in (TINY, ModelConfig.from_preset("nano"), TINY.replace(tie_weights=False, bias=False, d_head=6)):
        model = GPT(config.replace(**SWITCHES[switch]))
        c = count_params(model.config)
        assert c["total"] == model.num_params()
        assert c["layer.total"] == sum(p.numel() for p in model.h[0].parameters())
        assert c["embedding"] + c["non_embedding"] == c["total"]
        out_bias = model.h[0].attn.c_proj.bias.numel() if config.bias else 0
        attn = sum(p.numel() for p in model.h[0].attn.parameters())
        assert config.n_head * (c["head.weights"] + c["head.biases"]) + out_bias == attn


def test_each_switchs_parameter_delta():
    d, L, v, a = 16, 2, 11, 16
    base = count_params(TINY)["total"]
    delta = {name: count_params(TINY.replace(**kw))["total"] - base for name, kw in SWITCHES.items()}
    rotary, qk_norm, value_embeds = -8 * d, L * 2 * a, L * v * a  # no wpe (block 8); 2 gains; a table a layer
    assert delta == {
        "rotary": rotary,
        "qk_norm": qk_norm,
        "value_embeds": value_embeds,
        "relu2": 0,
        "zero_init_proj": 0,
        "all": rotary + qk_norm + value_embeds,
    }


@each_switch
def test_fused_attention_equals_the_hand_written_one_in_training(switch):
    manual = model_with(switch)
    fused = model_with(switch, attn_impl="sdpa")
    idx = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    loss_m, loss_f = manual(idx, idx)[1], fused(idx, idx)[1]
    torch.testing.assert_close(loss_f, loss_m)
    loss_m.backward()
    loss_f.backward()
    for (name, p), q in zip(manual.named_parameters(), fused.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


@each_switch
def test_cached_decoding_gives_the_full_forwards_logits(switch):
    # the cache turns each new query and key at its absolute position: step by step, by hand or fused, gives
    # the hand-written attention's logits all at once
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(2))
    want = model_with(switch).eval()(idx)[0]
    for impl in ("manual", "sdpa"):
        model = model_with(switch, attn_impl=impl).eval()
        caches = make_caches(model, 2)
        steps = [model(idx[:, :3], kv_caches=caches)[0]]
        steps += [model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(3, 8)]
        torch.testing.assert_close(torch.cat(steps, dim=1), want)


@each_switch
def test_sampling_past_block_size_and_the_samplers_copy(switch):
    plain, lean = model_with(switch).eval(), model_with(switch).for_decoding()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    sampling = dict(seed=3, top_k=6, slide=3)
    want = generate_ids(plain, prompt, 3 * 8, use_cache=False, **sampling)
    assert torch.equal(generate_ids(plain, prompt, 3 * 8, **sampling), want)  # the cache slides too
    assert torch.equal(generate_ids(lean, prompt, 3 * 8, **sampling), want)
    assert len(set(want[0, 3:].tolist())) > 2  # real text, not one token repeated
    half = model_with(switch).for_decoding(torch.float16)
    greedy = generate_ids(plain, prompt, 12, temperature=0, slide=3)
    assert torch.equal(generate_ids(half, prompt, 12, temperature=0, slide=3), greedy)


@each_switch
def test_attention_maps_and_head_roles_with_the_switch_on(switch):
    model = model_with(switch, ModelConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32))
    text = torch.randint(0, 65, (24,), generator=torch.Generator().manual_seed(1))
    maps = model.attention_maps(text)
    assert maps.shape == (2, 4, 24, 24)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 4, 24))
    assert not maps.triu(1).any()  # still causal
    scores = head_roles(model, text, induction_probe(None, 65, 16, n_seq=4))
    assert list(scores) == list(ROLES)
    assert all(s.shape == (2, 4) and bool(((s >= 0) & (s <= 1)).all()) for s in scores.values())


def test_switches_survive_checkpoint_and_an_exact_resume(corpus, tmp_path):
    flags = ["--model.pos_emb=rotary", "--model.qk_norm", "--model.value_embeds", "--model.activation=relu2"]
    flags += ["--model.zero_init_proj"]

    def run(root, resume=None, stop_at=None):
        args = tiny_args(corpus, root, *flags) + (["--resume", str(resume)] if resume else [])
        cfg, ckpt, path = resolve(args)
        return train(cfg, ckpt, path, stop_at=stop_at, out=io.StringIO())

    full = run(tmp_path / "a")
    assert run(tmp_path / "b", stop_at=6)["iter"] == 6
    resumed = run(tmp_path / "b", resume=tmp_path / "b/runs/r")
    assert resumed["losses"] == full["losses"]
    a = load_checkpoint(tmp_path / "a/runs/r/ckpt_latest.pt")
    b = load_checkpoint(tmp_path / "b/runs/r/ckpt_latest.pt")
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    model, _, _ = load_model(tmp_path / "a/runs/r/ckpt_latest.pt", "cpu")
    switches = {k: getattr(model.config, k) for k in ("pos_emb", "qk_norm", "value_embeds", "activation")}
    assert switches == {"pos_emb": "rotary", "qk_norm": True, "value_embeds": True, "activation": "relu2"}
    assert model.config.zero_init_proj and model.value_embeds is not None and "wpe.weight" not in a["model"]
    assert "qk_norm = true" in (tmp_path / "a/runs/r/config.toml").read_text()


def test_gpt2_export_refuses_the_switches_it_cannot_hold_by_name(tmp_path):
    model = GPT(TINY.replace(pos_emb="rotary", qk_norm=True, value_embeds=True, activation="relu2"))
    tokenizer = CharTokenizer("abcdefghijk")
    with pytest.raises(UserError) as e:
        hf.export(model, tokenizer, tmp_path / "x")
    message = str(e.value)
    assert "\n" not in message and message.startswith(
        "model.pos_emb='rotary', model.qk_norm, model.value_embeds, model.activation='relu2': GPT-2 has no equivalent"
    )
    assert not list(tmp_path.iterdir())  # nothing half-written
    named = {"rotary": "model.pos_emb='rotary'", "qk_norm": "model.qk_norm", "value_embeds": "model.value_embeds"}
    for switch, name in (named | {"relu2": "model.activation='relu2'"}).items():
        with pytest.raises(UserError, match="^" + re.escape(f"{name}: GPT-2 has no equivalent")):
            hf.export(GPT(TINY.replace(**SWITCHES[switch])), tokenizer, tmp_path / "x")
    # zero-initialised projections are only a start: the trained weights are GPT-2's shapes, and export
    assert (hf.export(GPT(TINY.replace(zero_init_proj=True)), tokenizer, tmp_path / "ok") / "config.json").exists()
