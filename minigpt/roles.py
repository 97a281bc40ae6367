"""Head roles: what each attention head does, measured from its attention weights alone.

Every score is a mean attention weight, so it lies in [0, 1]: 1 means the head always puts all of its
weight on the keys the role names, 0 means it never looks there. For weights w (row i = query i,
column j = key j, causal so w[i, j] = 0 for j > i) on a text of T token ids x:

    previous-token   mean over queries i >= 1 of  w[i, i - 1]
    first-token      mean over queries i >= 1 of  w[i, 0]             (the "attention sink")
    self             mean over queries i >= 1 of  w[i, i]
    duplicate-token  mean over queries i with an earlier j < i, x[j] = x[i], of  sum of w[i, j] over those j
    induction        on L random tokens repeated twice (T = 2L), mean over the second copy, i >= L, of
                     w[i, i - L + 1]: the key right after the query token's occurrence in the first copy
                     (Olsson et al., 2022, "In-context Learning and Induction Heads")

Query 0 is left out: it has a single key, so every head gives it weight 1 there whatever the head does.
The first four roles are measured on the probe text of the attention maps; induction on its own probe,
`induction_probe`, whose tokens are all different within a copy so that "the earlier occurrence" is one
position. They are drawn, seeded, from the most frequent tokens of a reference text (the training split
when training, the user's text in `sample.py --attention`): those that together make up 99% of it. That
leaves out a char corpus's rare characters (e.g. '$' and '&' in Shakespeare), on which a small model has
learned little, and keeps thousands of common ids of a BPE vocabulary. With too few such tokens for a
copy, the ids are drawn from the whole vocabulary instead, as TransformerLens does for GPT-2.

Uniform causal attention (each query spreading its weight over all keys it sees) is the reference a
random model sits near: on T = 32 it scores about 0.1 on previous, first and self, and 0.03 on induction;
`uniform_scores` computes it for any probe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

ROLES = ("previous_token", "first_token", "self", "duplicate_token", "induction")
COMMON_FRACTION = 0.99  # induction tokens come from the most frequent tokens making up this much of a text
INDUCTION_LENGTH = 32  # tokens per copy of the induction probe (fewer when the context is shorter)
REFERENCE_TOKENS = 1 << 20  # token frequencies are counted on this many ids of the reference text at most
MIN_TEXT_TOKENS = 4
"""Shorter probe texts leave no roles to tell apart: on 3 tokens, query 1's previous token is also its first."""


def text_scores(weights: torch.Tensor, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """previous_token, first_token, self and duplicate_token scores of attention on a text.

    weights: (..., T, T) attention probabilities, ids: (T,) the text's token ids -> each score (...)."""
    T = weights.size(-1)
    if weights.dim() < 2 or weights.size(-2) != T or len(ids) != T or T < 2:
        raise ValueError(
            f"need (..., T, T) weights for T = len(ids) >= 2 tokens; got {tuple(weights.shape)} and {len(ids)} ids"
        )
    w = weights.detach().to(torch.float64)[..., 1:, :]  # queries 1..T-1: (..., T-1, T)
    queries = torch.arange(1, T)
    ids = torch.as_tensor(ids).cpu()
    same = ids[:, None] == ids[None, :]  # (T, T): same token at query i and key j
    earlier = torch.tril(torch.ones(T, T, dtype=torch.bool), diagonal=-1)  # j < i
    duplicates = (same & earlier)[1:].to(w.dtype)  # (T-1, T): keys j < i holding the query's token
    has_duplicate = duplicates.sum(-1) > 0  # (T-1,) queries whose token occurred before
    on_duplicates = (w * duplicates).sum(-1)  # (..., T-1)
    return {
        "previous_token": w[..., queries - 1, queries - 1].mean(-1),  # row i-1 of w is query i: key i-1
        "first_token": w[..., 0].mean(-1),
        "self": w[..., queries - 1, queries].mean(-1),
        # a text without repeated tokens has no duplicate to attend to: NaN, not a misleading 0
        "duplicate_token": (
            on_duplicates[..., has_duplicate].mean(-1)
            if has_duplicate.any()
            else torch.full(w.shape[:-2], float("nan"), dtype=w.dtype)
        ),
    }


def induction_score(weights: torch.Tensor, length: int) -> torch.Tensor:
    """Induction score of attention on `length` tokens repeated twice.

    weights: (..., 2 * length, 2 * length) -> (...): the mean over queries i in the second copy of
    w[i, i - length + 1], the weight on the token that followed the query token last time."""
    T = weights.size(-1)
    if T != 2 * length or weights.size(-2) != T:
        raise ValueError(
            f"need (..., {2 * length}, {2 * length}) weights for a copy of {length} tokens; got {tuple(weights.shape)}"
        )
    queries = torch.arange(length, T)  # the second copy
    return weights.detach().to(torch.float64)[..., queries, queries - length + 1].mean(-1)


def induction_probe(
    reference: np.ndarray | torch.Tensor | None, vocab_size: int, length: int, n_seq: int = 8, seed: int = 0
) -> torch.Tensor:
    """n_seq sequences of `length` different random tokens, each repeated twice: (n_seq, 2 * length) ids.

    Tokens come from the most frequent ids of `reference` (ids of a text; its first REFERENCE_TOKENS)
    that make up COMMON_FRACTION of it, or from all of range(vocab_size) when reference is None or has
    fewer than `length` such ids."""
    if length < 1:
        raise ValueError(f"the induction probe needs a copy of at least 1 token (got {length})")
    pool = np.arange(vocab_size)
    if reference is not None and len(reference):
        counts = np.bincount(np.asarray(reference[:REFERENCE_TOKENS], dtype=np.int64), minlength=vocab_size)
        order = np.argsort(-counts, kind="stable")  # most frequent first
        covered = np.cumsum(counts[order]) / counts.sum()
        common = order[: int(np.searchsorted(covered, COMMON_FRACTION)) + 1]
        pool = common if len(common) >= length else pool
    if len(pool) < length:
        raise ValueError(f"the induction probe needs {length} different tokens but the vocabulary has {len(pool)}")
    rng = np.random.default_rng(seed)
    copies = np.stack([rng.choice(pool, size=length, replace=False) for _ in range(n_seq)])  # (n_seq, length)
    return torch.from_numpy(np.concatenate([copies, copies], axis=1)).long()  # (n_seq, 2 * length)


@dataclass(frozen=True)
class RoleProbes:
    """What head roles are scored on, for training's evaluations and for sample.py --attention alike."""

    text: torch.Tensor  # (T,) ids: the previous, first, self and duplicate-token roles
    induction: torch.Tensor  # (n_seq, 2L) ids from induction_probe: the induction role
    uniform: dict[str, float]  # uniform attention's scores on both: the reference a head is read against


def role_probes(
    text: Sequence[int] | torch.Tensor,
    reference: np.ndarray | torch.Tensor | Sequence[int] | None,
    vocab_size: int,
    block_size: int,
) -> RoleProbes | None:
    """The probes for a model of that vocabulary and context: the text, and an induction probe whose tokens
    are the common ones of `reference` (the training split, or the text itself in sample.py), each copy at
    most INDUCTION_LENGTH and half the context. None when the text is shorter than MIN_TEXT_TOKENS."""
    if len(text) < MIN_TEXT_TOKENS:
        return None
    text = torch.as_tensor(text)
    induction = induction_probe(reference, vocab_size, min(INDUCTION_LENGTH, block_size // 2))
    return RoleProbes(text, induction, uniform_scores(text, induction.size(1) // 2))


def head_roles(
    model: torch.nn.Module,
    text: torch.Tensor,
    induction: torch.Tensor,
    *,
    text_maps: torch.Tensor | None = None,
    induction_maps: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Every role's score for every head: role -> (n_layer, n_head) float64.

    text: (T,) ids of the probe text; induction: (n_seq, 2L) ids from `induction_probe`. A caller that has
    already computed the model's maps on them (to log them) passes them in, so they are not computed twice."""
    maps = model.attention_maps(text) if text_maps is None else text_maps  # (n_layer, nh, T, T)
    scores = text_scores(maps, text)
    # (n_layer, n_seq, nh, 2L, 2L)
    weights = model.attention_maps(induction) if induction_maps is None else induction_maps
    scores["induction"] = induction_score(weights, induction.size(1) // 2).mean(1)  # mean over the sequences
    return {role: scores[role] for role in ROLES}


@torch.no_grad()
def copy_losses(model: torch.nn.Module, induction: torch.Tensor) -> dict[str, float]:
    """Mean next-token loss on the induction probe's first copy and on its second copy (nats).

    Random tokens cannot be predicted the first time (about ln of the pool they come from); the second
    time a model can predict them only by looking back at what followed the same token before, which is
    what an induction head does. So the second-copy loss drops away from the first-copy loss when an
    induction head forms: the loss bump of Olsson et al. (2022), seen where it happens."""
    was_training = model.training
    model.eval()
    try:
        logits, _ = model(induction.to(model.wte.weight.device))  # (n_seq, 2L, vocab)
    finally:
        model.train(was_training)
    L = induction.size(1) // 2
    logp = torch.log_softmax(logits[:, :-1].float().cpu(), dim=-1)  # position j predicts token j + 1
    nll = -logp.gather(-1, induction[:, 1:, None]).squeeze(-1)  # (n_seq, 2L - 1)
    # tokens 1..L-1 of the first copy; tokens L+1..2L-1 of the second (token L, the copy's start, is neither)
    return {"first_copy": nll[:, : L - 1].mean().item(), "second_copy": nll[:, L:].mean().item()}


def uniform_scores(text: torch.Tensor, induction_length: int) -> dict[str, float]:
    """The scores of uniform causal attention on the same probes: what a head that looks nowhere in
    particular gets (a freshly initialised model sits near these)."""
    T = len(text)
    uniform = torch.tril(torch.ones(T, T, dtype=torch.float64))
    scores = {role: float(s) for role, s in text_scores(uniform / uniform.sum(-1, keepdim=True), text).items()}
    L = induction_length
    repeated = torch.tril(torch.ones(2 * L, 2 * L, dtype=torch.float64))
    scores["induction"] = float(induction_score(repeated / repeated.sum(-1, keepdim=True), L))
    return {role: scores[role] for role in ROLES}


def format_roles(scores: dict[str, torch.Tensor], reference: dict[str, float] | None = None, top: int = 3) -> str:
    """A plain-text table of the `top` heads per role, e.g. `induction  L1 H2 0.71  L1 H0 0.12 ...`,
    with the uniform-attention reference value last when given."""
    lines = [f"{'role':<16}  {'top heads (layer, head, score)':<{top * 15}}" + ("uniform" if reference else "")]
    for role, s in scores.items():
        flat = s.flatten()
        n_head = s.shape[-1]
        best = [i for i in torch.argsort(torch.nan_to_num(flat, nan=-1.0), descending=True)[:top].tolist()]
        cells = "".join(f"L{i // n_head} H{i % n_head} {float(flat[i]):5.2f}".ljust(15) for i in best)
        ref = f"{reference[role]:.2f}" if reference else ""
        lines.append(f"{role:<16}  {cells:<{top * 15}}{ref}")
    return "\n".join(line.rstrip() for line in lines)


def strongest_heads(scores: dict[str, torch.Tensor], roles: tuple[str, ...] = ("previous_token", "induction")) -> str:
    """The strongest head of each role in a few characters, for a progress line:
    `top heads: prev L0H1 0.62, ind L1H3 0.41`."""
    short = {
        "previous_token": "prev",
        "first_token": "first",
        "self": "self",
        "duplicate_token": "dup",
        "induction": "ind",
    }
    cells = []
    for role in roles:
        s = torch.nan_to_num(scores[role], nan=-1.0)
        layer, head = divmod(int(s.argmax()), s.shape[-1])
        cells.append(f"{short[role]} L{layer}H{head} {float(s[layer, head]):.2f}")
    return "top heads: " + ", ".join(cells)
