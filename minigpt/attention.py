"""Masked multi-head self-attention, written out step by step.

The whole computation of one head, for queries q, keys k and values v:

    scores  = q @ k^T * scale          # how well each query matches each key
    scores  = scores.masked_fill(~allowed, -inf)   # causal mask: no peeking ahead
    weights = softmax(scores, dim=-1)  # each query's weights over keys sum to 1
    output  = weights @ v              # a weighted average of the values

`CausalSelfAttention` runs n_head of these in parallel on learned projections of
the same input, concatenates the heads and projects back to the model width.
Optional steps before the scores ("A CPU speedrun", all off by default): QK-norm
(`rms_norm` on each head's q and k) and rotary positions (`rotary_angles`, `rotate`);
value embeddings arrive from the model, added to v.
Shape legend used throughout: B batch, T sequence length, C model width (n_embd),
nh number of heads, hs head size (d_head).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.config import ModelConfig


def causal_mask(t_q: int, t_k: int, *, window: int | None = None, device=None) -> torch.Tensor:
    """Which keys each query may attend to: a bool (t_q, t_k) tensor, True = allowed.

    The queries are the last t_q of the t_k positions (t_q < t_k when earlier keys come
    from a KV cache), so query i sits at absolute position i + (t_k - t_q).
    Causal: key j is allowed only if j <= that position. With `window` = w the query
    also ignores keys more than w - 1 positions behind it: it sees a band of the w most
    recent positions, itself included (the locally banded layers of GPT-3, after the
    Sparse Transformer of Child et al., 2019).
    """
    q_pos = torch.arange(t_k - t_q, t_k, device=device).unsqueeze(1)  # (t_q, 1)
    k_pos = torch.arange(t_k, device=device).unsqueeze(0)  # (1, t_k)
    allowed = k_pos <= q_pos
    if window is not None:
        allowed = allowed & (k_pos > q_pos - window)
    return allowed


def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim after setting disallowed scores to -inf.

    exp(-inf) = 0, so masked keys get a weight of exactly 0 and the remaining weights
    of each row still sum to 1. A row with no allowed key at all would be 0/0 = NaN;
    causal masks always allow the query's own position, so that cannot happen there.
    """
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    scale: float | None = None,
    window: int | None = None,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention by hand: returns (output, weights).

    q: (..., T_q, d), k: (..., T_k, d), v: (..., T_k, d_v) -> output (..., T_q, d_v),
    weights (..., T_q, T_k). `scale` defaults to 1/sqrt(d) (Vaswani et al., 2017: keeps
    the dot products' variance near 1 so the softmax does not saturate); pass 1.0 for
    plain dot-product attention. `mask` is a bool tensor broadcastable to
    (..., T_q, T_k), True where attention is allowed (the same convention as
    torch.nn.functional.scaled_dot_product_attention); it combines with `causal`.
    `dropout`, if given, is applied to the weights before they mix the values; the
    returned weights are the ones before dropout.
    """
    if scale is None:
        scale = 1.0 / math.sqrt(q.size(-1))
    scores = (q @ k.transpose(-2, -1)) * scale  # (..., T_q, T_k)
    return attend(scores, v, causal=causal, mask=mask, window=window, dropout=dropout)


def attend(
    scores: torch.Tensor,
    v: torch.Tensor,
    *,
    causal: bool = False,
    mask: torch.Tensor | None = None,
    window: int | None = None,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask, softmax and mix: the part every score function shares.

    scores: (..., T_q, T_k), v: (..., T_k, d_v) -> (output (..., T_q, d_v), weights).
    """
    t_q, t_k = scores.shape[-2:]
    allowed = mask
    # one query at the last position (a KV-cache decoding step) may see every key: no band needed
    last_query_only = t_q == 1 and window is None
    if (causal and not last_query_only) or window is not None:
        band = causal_mask(t_q, t_k, window=window, device=scores.device)
        allowed = band if allowed is None else allowed & band
    weights = masked_softmax(scores, allowed)  # (..., T_q, T_k), rows sum to 1
    mixed = dropout(weights) if dropout is not None else weights
    return mixed @ v, weights  # (..., T_q, d_v)


def rms_norm(x: torch.Tensor, gain: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale each vector to root-mean-square 1, then by a learned gain (RMSNorm, Zhang & Sennrich, 2019).

    x: (..., hs), gain: broadcastable to x, e.g. (nh, 1, hs) -> (..., hs). Used on each head's queries and
    keys (QK-norm).
    """
    inv_rms = torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)  # (..., 1); one op fewer than x / sqrt
    return x * inv_rms * gain


def rotary_angles(positions: torch.Tensor, head_size: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the rotary angles (Su et al., 2021), each (T, hs/2), float32, for positions (T,).

    Pair i of a head's dimensions turns by position * base^(-2i/hs): the first pairs spin fast (they tell
    neighbours apart), the last ones slowly (they tell near from far).
    """
    freqs = base ** (-torch.arange(0, head_size, 2, device=positions.device, dtype=torch.float32) / head_size)
    angles = positions.float().unsqueeze(1) * freqs  # (T, hs/2)
    return angles.cos(), angles.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Turn each pair of dimensions (x_i, x_{i+hs/2}) of x by its angle: x (..., T, hs), cos/sin (T, hs/2).

    A 2-D rotation [[cos, -sin], [sin, cos]] per pair. Rotating q by position m and k by position n
    leaves q.k depending only on n - m, so the scores see relative positions. Su et al. pair neighbouring
    dimensions (x_2i, x_2i+1); pairing the two halves is the same up to a fixed reordering of dimensions,
    which the learned projections absorb, and needs no interleaving.
    """
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs/2) each
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)  # (..., T, hs)


class AdditiveScore(nn.Module):
    """Additive (Bahdanau et al., 2015) scores, one small network per head.

    score(q, k) = w^T tanh(W_q q + W_k k). It costs O(T^2 * hs) memory, so it is meant
    for study on short contexts, not for speed.
    """

    def __init__(self, n_head: int, head_size: int):
        super().__init__()
        self.w_q = nn.Parameter(torch.empty(n_head, head_size, head_size))
        self.w_k = nn.Parameter(torch.empty(n_head, head_size, head_size))
        self.w = nn.Parameter(torch.empty(n_head, head_size))
        for p in (self.w_q, self.w_k, self.w):
            nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q: (B, nh, T_q, hs), k: (B, nh, T_k, hs) -> scores (B, nh, T_q, T_k)."""
        pq = torch.einsum("bhtd,hde->bhte", q, self.w_q)  # (B, nh, T_q, hs)
        pk = torch.einsum("bhtd,hde->bhte", k, self.w_k)  # (B, nh, T_k, hs)
        hidden = torch.tanh(pq.unsqueeze(3) + pk.unsqueeze(2))  # (B, nh, T_q, T_k, hs)
        return torch.einsum("bhqke,he->bhqk", hidden, self.w)


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention: project, split heads, attend, merge, project.

    forward(x) returns (y, weights); weights is (B, nh, T, T_k) when asked for with
    need_weights=True and None otherwise (nothing extra is kept then). With model.pos_emb='rotary' the
    caller passes `rotary`, the (cos, sin) of the new tokens' positions; with model.value_embeds,
    `value_embed`, the new tokens' value embeddings (B, T, nh*hs).
    """

    def __init__(self, config: ModelConfig, layer_idx: int = 0):
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.head_size
        inner = config.attn_dim  # n_head * head_size, usually = n_embd
        # Q, K and V for all heads in one matmul (GPT-2's c_attn); split in forward.
        self.c_attn = nn.Linear(config.n_embd, 3 * inner, bias=config.bias)
        self.c_proj = nn.Linear(inner, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.impl = config.attn_impl
        self.score = config.attn_score
        self.window = config.window_for_layer(layer_idx)
        self.additive = AdditiveScore(self.n_head, self.head_size) if self.score == "additive" else None
        if config.qk_norm:
            # A gain per head and dimension, starting at 1 (plain RMS norm). Kept flat, (nh*hs,), like a
            # LayerNorm's: the optimizer treats 1-D tensors as gains (no weight decay, never Muon).
            self.q_gain = nn.Parameter(torch.ones(self.n_head * self.head_size))
            self.k_gain = nn.Parameter(torch.ones(self.n_head * self.head_size))
        self.qk_norm = config.qk_norm

    def forward(
        self,
        x: torch.Tensor,
        *,
        need_weights: bool = False,
        kv_cache=None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        value_embed: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        B, T, C = x.size()
        nh, hs = self.n_head, self.head_size
        q, k, v = self.c_attn(x).split(nh * hs, dim=2)  # 3 x (B, T, nh*hs)
        if value_embed is not None:
            # Value embeddings (modded-nanogpt): the token's own identity, straight into what the heads pass
            # on, however much the residual stream has mixed it by this layer. A plain sum: a weight on
            # either term would only rescale what the embedding table and c_attn can learn anyway.
            v = v + value_embed  # (B, T, nh*hs)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            # QK-norm (Henry et al., 2020; modded-nanogpt): with q and k of RMS 1, |q.k| <= hs whatever the
            # weights do, so the logits stay bounded and a higher learning rate cannot saturate the softmax.
            # The scale stays 1/sqrt(hs) (logits within +-sqrt(hs)); the learned gains let a head sharpen
            # beyond that, slowly, one optimizer step at a time.
            q = rms_norm(q, self.q_gain.view(nh, 1, hs))  # (B, nh, T, hs), gain broadcast over B and T
            k = rms_norm(k, self.k_gain.view(nh, 1, hs))  # (B, nh, T, hs)
        if rotary is not None:
            # Rotary positions: turn q and k by the angles of their absolute positions (new tokens only:
            # cached keys were turned when they were new), so q.k sees how far apart they are.
            q, k = rotate(q, *rotary), rotate(k, *rotary)  # (B, nh, T, hs)
        if kv_cache is not None:
            # Generation: keep this step's keys/values and attend over all cached ones.
            k, v = kv_cache.update(k, v)  # (B, nh, T_k, hs), T_k >= T

        if self.impl == "sdpa" and not need_weights:
            y, weights = self._fused(q, k, v), None
        else:
            mask_args = dict(causal=True, window=self.window, dropout=self.attn_dropout)
            if self.score == "additive":
                scores = self.additive(q, k)  # (B, nh, T, T_k)
                y, weights = attend(scores, v, **mask_args)  # y: (B, nh, T, hs)
            else:
                scale = 1.0 if self.score == "dot" else None  # None: 1/sqrt(hs)
                y, weights = scaled_dot_product_attention(q, k, v, scale=scale, **mask_args)
            if not need_weights:
                weights = None

        y = y.transpose(1, 2).contiguous().view(B, T, nh * hs)  # heads side by side: (B, T, nh*hs)
        y = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return y, weights

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The same attention through torch's fused kernel (optional fast path)."""
        t_q, t_k = q.size(-2), k.size(-2)
        dropout_p = self.attn_dropout.p if self.training else 0.0
        scale = 1.0 if self.score == "dot" else None
        if self.window is None and t_q in (1, t_k):  # a decoding step's one query may see every key: no mask
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=t_q > 1, scale=scale)
        allowed = causal_mask(t_q, t_k, window=self.window, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout_p, scale=scale)
