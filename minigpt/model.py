"""The GPT decoder: embeddings, a stack of pre-LayerNorm blocks, and a tied LM head.

The model is single-device and knows nothing about training: it maps token ids to
next-token logits (and a loss when targets are given).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from minigpt.attention import CausalSelfAttention, rotary_angles
from minigpt.config import ModelConfig, load_presets  # noqa: F401  (re-exported)
from minigpt.errors import UserError


class _SkipInit(TorchFunctionMode):
    """Inside it, torch.nn.init's fills return their tensor untouched; outside, nothing changes."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **kwargs)


def _output_in_float32(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.float()


def _input_in_weights_dtype(module: nn.Module, args: tuple) -> tuple:
    return (args[0].to(module.weight.dtype),)


class ReLUSquared(nn.Module):
    """relu(x)^2, the Primer activation (So et al., 2021): as cheap as ReLU, with a slope that does not jump at
    0; one of the two changes behind most of Primer's gain over the Transformer in their architecture search."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).square()


class MLP(nn.Module):
    """Position-wise feed-forward network: expand, nonlinearity (GELU by default), project back."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.ff_dim, bias=config.bias)
        if config.activation == "relu2":
            self.act = ReLUSquared()
        else:
            self.act = nn.GELU(approximate="tanh" if config.activation == "gelu_tanh" else "none")
        self.c_proj = nn.Linear(config.ff_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block, pre-LayerNorm: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, *, need_weights: bool = False, kv_cache=None, rotary=None, value_embed=None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, weights = self.attn(
            self.ln_1(x), need_weights=need_weights, kv_cache=kv_cache, rotary=rotary, value_embed=value_embed
        )
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, weights


class GPT(nn.Module):
    """A decoder-only transformer language model (GPT-2/GPT-3 architecture)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embedding
        if config.pos_emb == "learned":  # rotary positions turn q and k in attention instead: no table
            self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embedding
        # Value embeddings: one more token table per layer (vocab x n_head*d_head), added to its attention values
        self.value_embeds = None
        if config.value_embeds:
            self.value_embeds = nn.ModuleList(
                nn.Embedding(config.vocab_size, config.attn_dim) for _ in range(config.n_layer)
            )
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.tie_head()
        # The dtype attention works in, and so the KV cache's; None: the weights' (see for_decoding).
        self.attention_dtype: torch.dtype | None = None
        self.apply(self._init_weights)
        # GPT-2 scales the init of projections that write into the residual stream by
        # 1/sqrt(2 * n_layer): each block adds two of them, so the sum keeps its scale.
        # zero_init_proj (modded-nanogpt) starts them at zero instead: every block starts as the identity,
        # the loss starts as the embeddings' alone, and each block grows in from there. No gradient reaches
        # inside a block through a zero matrix, so the first step moves the projections, the embeddings and
        # ln_f; the rest follow from the second.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(p)
                else:
                    nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @classmethod
    def empty(cls, config: ModelConfig) -> GPT:
        """A GPT of config's shape with no weights yet (meta tensors), for load_state_dict(state, assign=True).

        Nothing is drawn at random for weights about to be replaced, and torch.nn.init is left alone: the
        fills are skipped only inside this call (_SkipInit). Skipping them also keeps start-up short, as a
        random fill of a meta tensor imports torch._dynamo (docs/benchmarks.md, "GPT-2 from Hugging Face").
        """
        with torch.device("meta"), _SkipInit():
            return cls(config)

    def tie_head(self) -> None:
        """With config.tie_weights, make the LM head read the token embedding's matrix: one matrix both
        reads tokens in and scores them out (Press & Wolf, 2017). Call again after anything that gives
        either its own Parameter (load_state_dict(assign=True), a change of layout)."""
        if self.config.tie_weights:
            self.lm_head.weight = self.wte.weight

    @torch.no_grad()
    def for_decoding(self, dtype: torch.dtype = torch.float32) -> GPT:
        """Make this model the sampler's copy (in place, and returned): weights in `dtype`, eval mode, a lean step.

        Only the sampler's copy changes: checkpoints and training never see it, and it is not meant to be
        trained. What changes, and why (docs/benchmarks.md, "Decoding at the speed of memory"):
        - Weight layout. At batch 1 a decoding step reads every weight once, in one matrix-vector product
          per linear layer, so how the weights lie in memory sets the speed. On a CPU, PyTorch's float32
          product runs faster over a weight stored transposed, (in, out) row-major (same values, swapped
          strides; F.linear takes it as is), while float16 and bfloat16 run far slower that way, so they are
          made (out, in) row-major.
        - Dropout layers, which do nothing in eval mode but still cost a call, go.
        - Attention switches to the fused kernel, proven equal to the hand-written math
          (tests/test_generate.py); asking for the weights (attention maps) still runs the hand-written path.
        - On a CPU attention works in float32 whatever the weights: there, attention over half-precision
          keys runs several times slower, and the keys are small next to the weights. The query, key and
          value projection hands on float32, and the output projection takes its input back in its dtype.
        """
        self.to(dtype).eval()
        if torch.finfo(dtype).max < torch.finfo(torch.float32).max:  # float16: a diverged weight overflows
            for name, p in self.named_parameters():  # finite in float32 (checked on load)
                if not bool(torch.isfinite(p.sum(dtype=torch.float32))) and not bool(torch.isfinite(p).all()):
                    dtype_name = str(dtype).removeprefix("torch.")
                    raise UserError(
                        f"the weights do not fit in {dtype_name}: {name} holds values beyond its largest, "
                        f"{torch.finfo(dtype).max:g}; sample with dtype float32"
                    )
        for module in list(self.modules()):
            for name, child in module.named_children():
                if isinstance(child, nn.Dropout):
                    setattr(module, name, nn.Identity())
        for block in self.h:
            if block.attn.score != "additive":  # additive scores have no fused kernel
                block.attn.impl = "sdpa"
        on_cpu = self.wte.weight.device.type == "cpu"
        transposed = on_cpu and dtype == torch.float32
        layers = [m for m in self.modules() if isinstance(m, nn.Linear)]
        if self.config.tie_weights:  # the head is wte's matrix: lay it out there (a lookup reads a row either way)
            layers = [self.wte if m is self.lm_head else m for m in layers]
        for module in layers:  # either layout may come in: GPT-2's weights arrive transposed
            w = module.weight.detach()
            w = w.t().contiguous().t() if transposed else w.contiguous()  # no copy when already so
            module.weight = nn.Parameter(w, requires_grad=module.weight.requires_grad)
        self.tie_head()
        self.attention_dtype = torch.float32 if on_cpu and dtype != torch.float32 else None
        if self.attention_dtype is not None:
            for block in self.h:
                block.attn.c_attn.register_forward_hook(_output_in_float32)  # q, k, v
                block.attn.c_proj.register_forward_pre_hook(_input_in_weights_dtype)  # the heads, merged
                if block.attn.additive is not None:  # its scoring network is part of the attention
                    block.attn.additive.float()
        return self

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
        rotary = None
        if self.config.pos_emb == "rotary":  # positions enter in attention, as angles; computed once for all layers
            x = self.drop(self.wte(idx))  # (B, T, C)
            rotary = rotary_angles(pos, self.config.head_size)  # cos, sin: (T, hs/2) each
        else:
            x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        attentions = []
        for i, block in enumerate(self.h):
            cache = kv_caches[i] if kv_caches is not None else None
            ve = self.value_embeds[i](idx) if self.value_embeds is not None else None  # (B, T, nh*hs)
            x, weights = block(x, need_weights=return_attention, kv_cache=cache, rotary=rotary, value_embed=ve)
            attentions.append(weights)
        logits = self.lm_head(self.ln_f(x))  # (B, T, vocab_size)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.reshape(-1), ignore_index=-1)
        if return_attention:
            return logits, loss, attentions
        return logits, loss
