"""Generation: KV cache equivalence, context sliding, sampling controls, errors."""

import pytest
import torch

from minigpt.generate import (
    GenerationStats,
    KVCache,
    context_start,
    generate,
    generate_ids,
    make_caches,
    sample_logits,
)
from minigpt.model import GPT, ModelConfig

TINY = ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16)


def tiny_model(config: ModelConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    model = GPT(config).eval()
    # Larger weights than the 0.02 init, so the logits are peaked and greedy text varies.
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    return model


def run(model, prompt, n, **kwargs):
    """(tokens (B, T + n), per-step logits [(B, vocab)])."""
    logits = []
    ids = generate_ids(model, prompt, n, on_logits=logits.append, **kwargs)
    return ids, logits


# --- KV cache -----------------------------------------------------------------


def test_kv_cache_appends_and_returns_views_of_the_filled_part():
    cache = KVCache(batch=2, n_head=3, max_len=5, head_size=4)
    k1, v1 = torch.randn(2, 3, 2, 4), torch.randn(2, 3, 2, 4)
    k, v = cache.update(k1, v1)
    assert cache.length == 2 and k.shape == (2, 3, 2, 4)
    k2, v2 = torch.randn(2, 3, 1, 4), torch.randn(2, 3, 1, 4)
    k, v = cache.update(k2, v2)
    torch.testing.assert_close(k, torch.cat([k1, k2], dim=2), rtol=0, atol=0)
    torch.testing.assert_close(v, torch.cat([v1, v2], dim=2), rtol=0, atol=0)
    assert k.data_ptr() == cache.k.data_ptr()  # a view: no copy of the past per step
    cache.reset()
    assert cache.length == 0
    with pytest.raises(ValueError, match="KV cache overflow"):
        cache.update(torch.randn(2, 3, 6, 4), torch.randn(2, 3, 6, 4))


def test_make_caches_one_per_layer_preallocated():
    caches = make_caches(tiny_model(), batch=3)
    assert len(caches) == 2
    assert all(c.k.shape == (3, 2, 8, 8) and c.length == 0 for c in caches)
    with pytest.raises(ValueError, match="max_len"):
        make_caches(tiny_model(), batch=1, max_len=9)


def test_cached_forward_matches_full_forward_position_by_position():
    model = tiny_model()
    idx = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    full, _ = model(idx)
    caches = make_caches(model, batch=2)
    with torch.no_grad():
        first, _ = model(idx[:, :3], kv_caches=caches)  # a 3-token prefill
        steps = [model(idx[:, t : t + 1], kv_caches=caches)[0] for t in range(3, 8)]
    torch.testing.assert_close(torch.cat([first, *steps], dim=1), full)


# --- the sampler's lean copy (GPT.for_decoding) ----------------------------------------


def test_for_decoding_keeps_every_value_and_stores_float32_weights_transposed():
    plain = tiny_model()
    lean = tiny_model().for_decoding()
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert torch.equal(p, q), name
    fc = lean.h[0].mlp.c_fc.weight
    assert not fc.is_contiguous() and fc.t().is_contiguous()  # (out, in) values over (in, out) memory
    assert lean.wte.weight is lean.lm_head.weight  # still tied: one matrix
    assert all(block.attn.impl == "sdpa" for block in lean.h) and not lean.training
    assert not any(isinstance(m, torch.nn.Dropout) for m in lean.modules())
    half = tiny_model().for_decoding(torch.float16)
    assert half.h[0].mlp.c_fc.weight.is_contiguous() and half.wte.weight.dtype == torch.float16
    arrived_transposed = tiny_model()  # as hf.load gives GPT-2's Conv1D weights: transposed views
    fc = arrived_transposed.h[0].mlp.c_fc
    fc.weight = torch.nn.Parameter(fc.weight.detach().t().contiguous().t())
    assert arrived_transposed.for_decoding(torch.float16).h[0].mlp.c_fc.weight.is_contiguous()
    assert make_caches(half, 1)[0].k.dtype == torch.float32  # the copy attends in float32 on a CPU
    assert make_caches(tiny_model().half(), 1)[0].k.dtype == torch.float16  # a plain model, in its weights' dtype


@pytest.mark.parametrize(
    "config",
    [TINY, TINY.replace(attn_window=3, attn_window_layers="all"), TINY.replace(attn_score="additive"),
     TINY.replace(tie_weights=False, bias=False)],
    ids=["manual", "banded", "additive", "untied-nobias"],
)  # fmt: skip
def test_lean_decoding_gives_the_plain_models_text_past_block_size(config):
    plain, lean = tiny_model(config, seed=8), tiny_model(config, seed=8).for_decoding()
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    want, want_logits = run(plain, prompt, 3 * 8, temperature=0, slide=3, use_cache=False)
    got, got_logits = run(lean, prompt, 3 * 8, temperature=0, slide=3)
    assert torch.equal(got, want)
    torch.testing.assert_close(torch.stack(got_logits), torch.stack(want_logits), rtol=1e-5, atol=1e-5)
    assert len(set(got[0, 3:].tolist())) > 2  # real text, not one token repeated
    kw = dict(temperature=0.9, top_k=6, seed=7, num_samples=3, slide=4)
    assert torch.equal(generate_ids(lean, [4], 20, **kw), generate_ids(plain, [4], 20, **kw))


def test_lean_copy_still_draws_attention_maps_by_hand():
    ids = [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(tiny_model().for_decoding().attention_maps(ids), tiny_model().attention_maps(ids))


@pytest.mark.parametrize("config", [TINY, TINY.replace(attn_score="additive")], ids=["dot", "additive"])
def test_half_precision_weights_decode_the_same_text_on_this_tiny_model(config):
    plain, half = tiny_model(config, seed=8), tiny_model(config, seed=8).for_decoding(torch.float16)
    want, want_logits = run(plain, [1, 2, 3], 20, temperature=0, slide=4)
    got, got_logits = run(half, [1, 2, 3], 20, temperature=0, slide=4)
    assert torch.equal(got, want)
    diff = (torch.stack(got_logits).float() - torch.stack(want_logits)).abs().max().item()
    assert 0 < diff < 0.05  # half precision really ran, and stayed close


# --- the cropping policy ---------------------------------------------------------


def test_context_start_policy():
    assert [context_start(n, 8, 1) for n in (1, 8, 9, 10, 20)] == [0, 0, 1, 2, 12]
    # slide 4: jumps of 4, the context length cycles through 5..8
    starts = [context_start(n, 8, 4) for n in range(8, 18)]
    assert starts == [0, 4, 4, 4, 4, 8, 8, 8, 8, 12]
    assert [n - s for n, s in zip(range(8, 18), starts)] == [8, 5, 6, 7, 8, 5, 6, 7, 8, 5]


def test_uncached_reference_with_slide_1_is_the_classic_last_block_size_crop():
    model = tiny_model()
    ids, logits = run(model, [1, 2, 3], 20, temperature=0, use_cache=False, slide=1)
    for step, got in enumerate(logits):
        context = ids[:, : 3 + step][:, -8:]  # nanoGPT's idx[:, -block_size:]
        torch.testing.assert_close(got, model(context)[0][:, -1])


# --- cached == uncached ----------------------------------------------------------


@pytest.mark.parametrize("slide", [1, 3, 4, 8])
@pytest.mark.parametrize(
    "config",
    [
        TINY,
        TINY.replace(attn_impl="sdpa"),
        TINY.replace(attn_window=3, attn_window_layers="all"),
        TINY.replace(attn_score="additive"),
    ],
    ids=["manual", "sdpa", "banded", "additive"],
)
def test_cached_and_uncached_greedy_agree_across_the_block_size_boundary(config, slide):
    model = tiny_model(config, seed=8)
    prompt = [1, 2, 3]
    cached, cached_logits = run(model, prompt, 3 * 8, temperature=0, slide=slide)
    plain, plain_logits = run(model, prompt, 3 * 8, temperature=0, slide=slide, use_cache=False)
    assert cached.shape == (1, 3 + 24)
    assert torch.equal(cached, plain)
    assert len(cached_logits) == len(plain_logits) == 24
    torch.testing.assert_close(torch.stack(cached_logits), torch.stack(plain_logits))
    assert len(set(cached[0, 3:].tolist())) > 2  # real text, not one token repeated


def test_prompt_longer_than_block_size_and_batched_prompts():
    model = tiny_model()
    prompt = torch.randint(0, 11, (2, 20), generator=torch.Generator().manual_seed(3))
    cached, cached_logits = run(model, prompt, 10, temperature=0, slide=3)
    plain, plain_logits = run(model, prompt, 10, temperature=0, slide=3, use_cache=False)
    assert torch.equal(cached, plain) and torch.equal(cached[:, :20], prompt)
    torch.testing.assert_close(torch.stack(cached_logits), torch.stack(plain_logits))


def test_cropping_policy_matters_so_the_equivalence_test_can_fail():
    model = tiny_model()
    _, slide1 = run(model, [1, 2, 3], 10, temperature=0, slide=1)
    _, slide4 = run(model, [1, 2, 3], 10, temperature=0, slide=4)
    torch.testing.assert_close(slide1[5], slide4[5])  # 8 tokens: both still see everything
    assert not torch.allclose(slide1[6], slide4[6])  # 9 tokens: last 8 vs last 5


def test_seeded_sampling_is_the_same_with_and_without_cache():
    model = tiny_model()
    kw = dict(temperature=0.9, top_k=6, top_p=0.95, seed=7, num_samples=3, slide=4)
    assert torch.equal(generate_ids(model, [4], 20, **kw), generate_ids(model, [4], 20, use_cache=False, **kw))


def test_with_cache_each_decode_step_feeds_one_token():
    model = tiny_model()
    fed = []

    def record(module, args, kwargs):
        fed.append((args[0].size(1), kwargs.get("kv_caches") is not None))

    handle = model.register_forward_pre_hook(record, with_kwargs=True)
    try:
        prompt, n, slide = [1, 2, 3], 20, 4
        stats = GenerationStats()
        list(generate(model, prompt, n, temperature=0, slide=slide, stats=stats))
    finally:
        handle.remove()
    assert all(with_cache for _, with_cache in fed)
    # The last sampled token is never fed back, so n forwards for n tokens.
    assert len(fed) == n
    expected = [3]  # the prompt, once
    for length in range(4, 3 + n):
        start = context_start(length, 8, slide)
        moved = start != context_start(length - 1, 8, slide)
        expected.append(length - start if moved else 1)  # a refill only when the window jumps
    assert [t for t, _ in fed] == expected
    assert expected.count(1) == 15
    assert stats.positions_computed == sum(expected)


def test_without_cache_every_step_feeds_the_whole_context():
    model = tiny_model()
    stats = GenerationStats()
    list(generate(model, [1, 2, 3], 20, temperature=0, slide=1, use_cache=False, stats=stats))
    assert stats.positions_computed == sum(min(n, 8) for n in range(3, 23))


# --- sampling controls ----------------------------------------------------------------

PROBS = torch.tensor([0.5, 0.3, 0.15, 0.05])


def draws(n: int = 4000, **kwargs) -> torch.Tensor:
    logits = PROBS.log().expand(n, 4)
    return sample_logits(logits, generator=torch.Generator().manual_seed(0), **kwargs)


def test_temperature_zero_is_argmax():
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 2.9]])
    assert sample_logits(logits, temperature=0).tolist() == [1, 0]
    assert sample_logits(logits, temperature=0, top_k=2, top_p=0.1).tolist() == [1, 0]


def test_plain_sampling_follows_the_probabilities():
    freq = torch.bincount(draws(), minlength=4) / 4000
    torch.testing.assert_close(freq, PROBS, atol=0.03, rtol=0)


def test_low_temperature_sharpens():
    assert (draws(temperature=0.1) == 0).float().mean() > 0.99


def test_top_k_keeps_exactly_k_candidates():
    assert set(draws(top_k=2).tolist()) == {0, 1}
    assert set(draws(top_k=1).tolist()) == {0}
    tied = torch.zeros(500, 5)  # five tied logits: still exactly k survive
    assert len(set(sample_logits(tied, top_k=3, generator=torch.Generator().manual_seed(0)).tolist())) == 3


@pytest.mark.parametrize(
    "top_p, kept", [(1e-6, {0}), (0.45, {0}), (0.75, {0, 1}), (0.85, {0, 1, 2}), (1.0, {0, 1, 2, 3})]
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    assert set(draws(top_p=top_p).tolist()) == kept


def test_top_p_renormalises_the_nucleus():
    freq = torch.bincount(draws(top_p=0.85), minlength=4) / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.15, 0.0]) / 0.95, atol=0.03, rtol=0)


def test_top_k_then_top_p():
    # top_k=2 leaves {0: 0.625, 1: 0.375}; top_p=0.6 then keeps token 0 alone
    assert set(draws(top_k=2, top_p=0.6).tolist()) == {0}


def test_same_seed_same_text_different_seed_different_text():
    model = tiny_model()
    a = generate_ids(model, [1, 2], 30, seed=1)
    b = generate_ids(model, [1, 2], 30, seed=1)
    c = generate_ids(model, [1, 2], 30, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(1)
    assert torch.equal(generate_ids(model, [1, 2], 30, generator=g), a)


def test_num_samples_are_independent_rows():
    model = tiny_model()
    ids = generate_ids(model, torch.tensor([[1, 2], [3, 4]]), 12, seed=0, num_samples=3)
    assert ids.shape == (6, 14)
    assert ids[:3, :2].eq(torch.tensor([1, 2])).all() and ids[3:, :2].eq(torch.tensor([3, 4])).all()
    assert len({tuple(row) for row in ids[:3, 2:].tolist()}) > 1


def test_num_samples_run_as_one_batch_not_a_loop_per_sample():
    model = tiny_model()
    batches = []
    handle = model.register_forward_pre_hook(lambda module, args: batches.append(args[0].size(0)))
    try:
        stats = GenerationStats()
        list(generate(model.for_decoding(), [1, 2], 5, seed=0, num_samples=8, stats=stats))
    finally:
        handle.remove()
    assert batches == [8] * 5  # one forward per step, all 8 samples in it
    assert stats.batch == 8 and stats.tokens_per_s == pytest.approx(8 * 5 / stats.elapsed_s)


def test_streams_one_token_per_step_and_fills_stats():
    model = tiny_model().train()
    stats = GenerationStats()
    stream = generate(model, [1, 2, 3], 5, seed=0, num_samples=2, stats=stats)
    assert stats.steps == 0  # nothing runs before the first token is asked for
    for i, token in enumerate(stream, start=1):
        assert token.shape == (2,) and token.dtype == torch.long
        assert stats.steps == i
        assert not torch.is_inference_mode_enabled()  # the caller's code runs normally
        assert not model.training
    assert model.training  # restored afterwards
    assert stats.batch == 2 and stats.prompt_tokens == 3 and stats.positions_computed == 7
    assert 0 < stats.time_to_first_token_s <= stats.elapsed_s
    assert stats.tokens_per_s > 0 and stats.decode_tokens_per_s > 0


def test_eos_stops_a_row_and_ends_when_all_rows_have():
    model = tiny_model()
    first = generate_ids(model, [1, 2, 3], 1, temperature=0)[0, -1].item()
    assert generate_ids(model, [1, 2, 3], 10, temperature=0, eos_id=first).shape == (1, 4)
    free = generate_ids(model, [5], 40, seed=3, num_samples=4)[:, 1:].tolist()  # the same draws, without eos
    eos = 2
    firsts = [row.index(eos) for row in free]  # each row reaches it, at different steps
    assert len(set(firsts)) > 1 and max(firsts) < 39
    ids = generate_ids(model, [5], 40, seed=3, num_samples=4, eos_id=eos)
    assert ids.size(1) == 1 + max(firsts) + 1  # ends at the step the last row reached eos
    for row, free_row, first in zip(ids[:, 1:].tolist(), free, firsts):
        assert row[:first] == free_row[:first]  # the text before eos is unchanged
        assert set(row[first:]) == {eos}  # eos repeats once reached


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-0.5), "temperature must be a finite number >= 0 (got -0.5)"),
        (dict(temperature=float("nan")), "temperature must be a finite number >= 0 (got nan)"),
        (dict(temperature=float("inf")), "temperature must be a finite number >= 0 (got inf)"),
        (dict(top_k=0), "top_k must be between 1 and the vocabulary size 11 (got 0)"),
        (dict(top_k=12), "top_k must be between 1 and the vocabulary size 11 (got 12)"),
        (dict(top_p=0.0), "top_p must be in (0, 1] (got 0.0)"),
        (dict(top_p=1.5), "top_p must be in (0, 1] (got 1.5)"),
        (dict(top_p=float("nan")), "top_p must be in (0, 1] (got nan)"),
        (dict(top_p=float("inf")), "top_p must be in (0, 1] (got inf)"),
        (dict(max_new_tokens=0), "max_new_tokens must be at least 1 (got 0)"),
        (dict(num_samples=0), "num_samples must be at least 1 (got 0)"),
        (dict(slide=9), "slide must be between 1 and block_size=8 (got 9)"),
        (dict(slide=0), "slide must be between 1 and block_size=8 (got 0)"),
        (dict(prompt=[]), "prompt is empty"),
        (dict(prompt=[3, 11]), "prompt has token ids outside [0, 11)"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_the_argument(kwargs, message):
    model = tiny_model()
    args = dict(prompt=[1, 2], max_new_tokens=5)
    args.update(kwargs)
    with pytest.raises(ValueError) as info:
        generate(model, args.pop("prompt"), args.pop("max_new_tokens"), **args)  # raises before any next()
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)
    assert "--" not in str(info.value)  # the library names arguments; only the CLI speaks in flags


def test_seed_and_generator_together_is_an_error():
    with pytest.raises(ValueError, match="seed or generator"):
        generate(tiny_model(), [1], 3, seed=1, generator=torch.Generator())
