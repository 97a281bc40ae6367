"""The GPT decoder: embeddings, a stack of pre-LayerNorm blocks, and a tied LM head.

The model is single-device and knows nothing about training: it maps token ids to
next-token logits (and a loss when targets are given).
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt.attention import CausalSelfAttention
from minigpt.config import ModelConfig, load_presets  # noqa: F401  (re-exported)


class MLP(nn.Module):
    """Position-wise feed-forward network: expand, GELU, project back."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ff_dim, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(config.ff_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, *, need_weights: bool = False, kv_cache=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(self.ln_1(x), need_weights=need_weights, kv_cache=kv_cache)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2/GPT-3 architecture)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # One matrix both reads tokens in and scores them out (Press & Wolf, 2017).
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the init of projections that write into the residual stream by
        # 1/sqrt(2 * n_layer): each block adds two of them, so the sum keeps its scale.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_params(self) -> int:
        """Parameters counted once each (a tied LM head adds nothing)."""
        return sum(p.numel() for p in self.parameters())

    @torch.no_grad()
    def attention_maps(self, ids) -> torch.Tensor:
        """Attention weights, for looking at: ids (T,) -> (n_layer, n_head, T, T), or a batch (B, T) ->
        (n_layer, B, n_head, T, T); float32 on the CPU, in eval mode (no dropout), by the hand-written attention."""
        x = torch.as_tensor(ids, dtype=torch.long, device=self.wte.weight.device)
        batched = x.dim() == 2
        x = x if batched else x.reshape(1, -1)  # (B, T)
        was_training = self.training
        self.eval()
        try:
            _, _, att = self(x, return_attention=True)
        finally:
            self.train(was_training)
        maps = torch.stack(att).float().cpu()  # (n_layer, B, nh, T, T)
        return maps if batched else maps[:, 0]

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        return_attention: bool = False,
        kv_caches=None,
    ):
        """idx: (B, T) token ids -> (logits (B, T, vocab_size), loss or None).

        With return_attention=True a third item is returned: a list with one
        (B, nh, T, T) attention-weight tensor per layer. kv_caches (one per layer, see
        minigpt.generate) make T new tokens attend to everything cached before them.
        """
        B, T = idx.size()
        start = kv_caches[0].length if kv_caches is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"cannot forward a sequence of length {start + T}: block_size is only "
                f"{self.config.block_size}; crop the input to its last {self.config.block_size} tokens"
            )
        pos = torch.arange(start, start + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        attentions = []
        for i, block in enumerate(self.h):
            cache = kv_caches[i] if kv_caches is not None else None
            x, weights = block(x, need_weights=return_attention, kv_cache=cache)
            attentions.append(weights)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1), ignore_index=-1)
        if return_attention:
            return logits, loss, attentions
        return logits, loss
