"""Tests for minigpt.roles: exact scores on hand-built attention patterns, the induction probe, and a model."""

import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt.config import ModelConfig
from minigpt.model import GPT
from minigpt.roles import (
    ROLES,
    format_roles,
    head_roles,
    induction_probe,
    induction_score,
    text_scores,
    uniform_scores,
)

ROOT = Path(__file__).resolve().parent.parent


def one_hot_pattern(T: int, key_of) -> torch.Tensor:
    """(T, T) attention where query i puts all its weight on key key_of(i) (must be <= i)."""
    w = torch.zeros(T, T)
    for i in range(T):
        w[i, key_of(i)] = 1.0
    return w


def uniform_pattern(T: int) -> torch.Tensor:
    w = torch.tril(torch.ones(T, T))
    return w / w.sum(-1, keepdim=True)


# -- hand-built patterns ------------------------------------------------------------------------


def test_previous_token_pattern():
    L = 8
    ids = torch.arange(2 * L) % L  # L distinct tokens, repeated twice
    w = one_hot_pattern(2 * L, lambda i: max(i - 1, 0))
    scores = text_scores(w, ids)
    assert scores["previous_token"] == 1.0
    assert scores["self"] == 0.0
    assert scores["first_token"] == pytest.approx(1 / (2 * L - 1))  # only query 1, whose previous token is 0
    assert scores["duplicate_token"] == 0.0  # token i - 1 never equals token i here
    assert induction_score(w, L) == 0.0


def test_induction_pattern():
    L = 8
    ids = torch.arange(2 * L) % L
    # first copy: previous token; second copy: the token after the earlier occurrence of the query token
    w = one_hot_pattern(2 * L, lambda i: i - L + 1 if i >= L else max(i - 1, 0))
    assert induction_score(w, L) == 1.0
    scores = text_scores(w, ids)
    assert scores["duplicate_token"] == 0.0  # one past the duplicate is not the duplicate
    assert scores["previous_token"] == pytest.approx((L - 1) / (2 * L - 1))  # queries 1..L-1 of 2L-1


def test_first_self_and_duplicate_patterns():
    ids = torch.tensor([5, 1, 2, 1, 3, 2, 1])
    T = len(ids)
    first = text_scores(one_hot_pattern(T, lambda i: 0), ids)
    assert first["first_token"] == 1.0 and first["self"] == 0.0
    assert text_scores(torch.eye(T), ids)["self"] == 1.0
    # each repeated token looks at its latest earlier occurrence; queries without one look at themselves
    latest = {3: 1, 5: 2, 6: 3}
    duplicate = text_scores(one_hot_pattern(T, lambda i: latest.get(i, i)), ids)
    assert duplicate["duplicate_token"] == 1.0
    # split evenly between both earlier 1s (positions 1 and 3) at query 6: still all on duplicates
    w = one_hot_pattern(T, lambda i: latest.get(i, i))
    w[6] = 0.0
    w[6, [1, 3]] = 0.5
    assert text_scores(w, ids)["duplicate_token"] == 1.0


def test_duplicate_score_is_nan_without_repeated_tokens():
    scores = text_scores(uniform_pattern(5), torch.arange(5))
    assert math.isnan(scores["duplicate_token"])


def test_scores_keep_leading_dims():
    w = torch.stack([uniform_pattern(6), one_hot_pattern(6, lambda i: max(i - 1, 0))]).expand(3, 2, 6, 6)
    scores = text_scores(w, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert all(s.shape == (3, 2) for s in scores.values())
    assert scores["previous_token"][:, 1].tolist() == [1.0, 1.0, 1.0]
    assert induction_score(w, 3).shape == (3, 2)


def test_uniform_scores_match_the_formula():
    T, L = 32, 16
    ref = uniform_scores(torch.arange(T), L)
    expected = sum(1 / (i + 1) for i in range(1, T)) / (T - 1)  # query i spreads 1 over i + 1 keys
    for role in ("previous_token", "first_token", "self"):
        assert ref[role] == pytest.approx(expected), role
    assert ref["induction"] == pytest.approx(sum(1 / (i + 1) for i in range(L, 2 * L)) / L)
    assert list(ref) == list(ROLES)


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(ValueError, match=r"for T = len\(ids\)"):
        text_scores(torch.zeros(4, 4), torch.arange(5))
    with pytest.raises(ValueError, match="copy of 3 tokens"):
        induction_score(torch.zeros(8, 8), 3)


# -- the induction probe ------------------------------------------------------------------------


def test_induction_probe_repeats_distinct_common_tokens():
    rng = np.random.default_rng(0)
    common = rng.integers(0, 20, size=10_000)  # ids 0..19 make up nearly all of the text
    reference = np.concatenate([common, [60, 61, 62]])  # three rare ids
    probe = induction_probe(reference, vocab_size=65, length=12, n_seq=5, seed=3)
    assert probe.shape == (5, 24) and probe.dtype == torch.long
    assert torch.equal(probe[:, :12], probe[:, 12:])
    for row in probe[:, :12]:
        assert len(set(row.tolist())) == 12  # all different within a copy
    assert probe.max() < 20  # never the rare ids
    assert torch.equal(probe, induction_probe(reference, 65, 12, n_seq=5, seed=3))  # seeded
    assert not torch.equal(probe, induction_probe(reference, 65, 12, n_seq=5, seed=4))


def test_induction_probe_falls_back_to_the_vocabulary():
    few = np.array([1, 2, 3] * 50)  # 3 distinct tokens cannot fill a copy of 10
    probe = induction_probe(few, vocab_size=50257, length=10, n_seq=2)
    assert len(set(probe[0, :10].tolist())) == 10
    assert induction_probe(None, vocab_size=50257, length=10).shape == (8, 20)
    with pytest.raises(ValueError, match="needs 10 different tokens but the vocabulary has 5"):
        induction_probe(None, vocab_size=5, length=10)


# -- on a model ---------------------------------------------------------------------------------


def test_random_init_model_scores_near_uniform():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=65, block_size=64, n_layer=2, n_head=4, n_embd=64)
    model = GPT(cfg)
    text = torch.randint(0, 65, (32,), generator=torch.Generator().manual_seed(1))
    probe = induction_probe(None, 65, 32, n_seq=8)
    scores = head_roles(model, text, probe)
    ref = uniform_scores(text, 32)
    assert list(scores) == list(ROLES)
    for role, s in scores.items():
        assert s.shape == (2, 4), role
        # init weights of std 0.02 give near-zero attention logits: every head is close to uniform
        assert (s - ref[role]).abs().max() < 0.01, (role, s, ref[role])
    assert scores["induction"].max() < 0.05  # no induction head at init
    assert model.training  # scoring left the mode as it found it


def test_format_roles_lists_top_heads():
    scores = {role: torch.zeros(2, 3, dtype=torch.float64) for role in ROLES}
    scores["induction"][1, 2] = 0.8
    scores["duplicate_token"][:] = float("nan")
    table = format_roles(scores, {role: 0.1 for role in ROLES}, top=2)
    lines = table.splitlines()
    assert len(lines) == 1 + len(ROLES) and "uniform" in lines[0]
    induction = next(line for line in lines if line.startswith("induction"))
    assert induction.split()[1:4] == ["L1", "H2", "0.80"] and induction.endswith("0.10")
    assert "nan" in next(line for line in lines if line.startswith("duplicate_token"))


@pytest.mark.benchmark
def test_induction_config_grows_an_induction_head(tmp_path):
    """`python train.py configs/induction.toml`, as users run it: one head's induction score goes from
    about 0.02 to at least 0.5 (docs/benchmarks.md, "Head roles", has the measured steps and seconds)."""
    import io

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minigpt.run import resolve, train

    cfg, _, _ = resolve([str(ROOT / "configs/induction.toml"), f"--train.out_dir={tmp_path}", "--train.run_name=r",
                         f"--data.cache_dir={tmp_path / 'cache'}", "--log.no_progress"])  # fmt: skip
    start = time.perf_counter()
    train(cfg, out=io.StringIO())
    seconds = time.perf_counter() - start
    events = EventAccumulator(str(tmp_path / "r"), size_guidance={"scalars": 0})
    events.Reload()
    curves = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"] if tag.startswith("role_induction/")}
    best = {tag: max(e.value for e in curve) for tag, curve in curves.items()}
    head = max(best, key=best.get)
    first = next(e.step for e in curves[head] if e.value >= 0.5)
    print(f"{head}: {curves[head][0].value:.3f} at step 0, >= 0.5 from step {first}, best {best[head]:.3f}; {seconds:.0f} s")
    assert curves[head][0].value < 0.05 and best[head] >= 0.5
    assert head.startswith("role_induction/layer_1/")  # it needs the previous-token head below it


def test_copy_losses_show_what_looking_back_buys():
    from minigpt.roles import copy_losses

    V, L = 50, 8
    probe = induction_probe(None, V, L, n_seq=3)

    class Copier(torch.nn.Module):  # predicts, in the second copy, the token that followed last time
        def __init__(self):
            super().__init__()
            self.wte = torch.nn.Embedding(1, 1)

        def forward(self, idx):
            logits = torch.zeros(*idx.shape, V)
            for j in range(L, 2 * L - 1):
                logits[torch.arange(idx.size(0)), j, idx[:, j - L + 1]] = 20.0
            return logits, None

    losses = copy_losses(Copier(), probe)
    assert abs(losses["first_copy"] - math.log(V)) < 1e-6  # uniform guesses on unseen random tokens
    assert losses["second_copy"] < 1e-6  # every second-copy token predicted from its earlier occurrence
    torch.manual_seed(0)
    fresh = copy_losses(GPT(ModelConfig(vocab_size=V, block_size=2 * L, n_layer=1, n_head=2, n_embd=16)), probe)
    assert abs(fresh["first_copy"] - fresh["second_copy"]) < 0.1  # untrained: no use of the first copy


def test_training_and_sampling_set_up_role_scoring_alike():
    """One rule for both (minigpt/roles.py role_probes): too short a text scores no roles; otherwise copies
    of at most INDUCTION_LENGTH tokens and half the context, drawn from the reference's common tokens."""
    from minigpt.roles import INDUCTION_LENGTH, MIN_TEXT_TOKENS, role_probes

    assert role_probes(list(range(MIN_TEXT_TOKENS - 1)), None, 50, 64) is None
    text = [1, 2, 3, 4, 5] * 2
    probes = role_probes(text, text, 50, block_size=8)
    assert probes.text.tolist() == text and probes.induction.shape[1] == 2 * 4  # half of block_size 8
    assert set(probes.induction.flatten().tolist()) <= set(text)  # the reference's tokens, not all 50
    assert probes.uniform == uniform_scores(torch.tensor(text), 4)
    long = role_probes(torch.arange(40), None, 50, block_size=1024)
    assert long.induction.shape[1] == 2 * INDUCTION_LENGTH


def test_head_roles_from_maps_given_equal_head_roles_computed(monkeypatch):
    # "Seams": an evaluation computes each probe's maps once and hands them to the role scoring
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, block_size=32, n_layer=2, n_head=2, n_embd=16)).eval()
    text, induction = torch.randint(0, 20, (24,)), induction_probe(None, 20, 8)
    expected = head_roles(model, text, induction)
    maps, induction_maps = model.attention_maps(text), model.attention_maps(induction)
    calls = []
    monkeypatch.setattr(model, "attention_maps", lambda ids: calls.append(ids))
    given = head_roles(model, text, induction, text_maps=maps, induction_maps=induction_maps)
    assert calls == []  # nothing computed again
    for role, scores in expected.items():
        torch.testing.assert_close(given[role], scores, equal_nan=True)
