"""Text generation: sampling controls and a key/value cache.

A GPT predicts one token at a time. Without a cache, every new token reruns the
model over the whole context, although the keys and values of the earlier positions
have not changed (causal attention: a position never looks ahead). `KVCache` keeps
them, one preallocated buffer per layer, so each step feeds the model just the newest
token (T=1) and that token attends over everything cached. The attention itself is
still the hand-written one in minigpt.attention; the cache only supplies its keys and
values.

Past block_size the context has to be cropped. The position embeddings are absolute,
so cached keys cannot simply be shifted; instead the window slides by `slide` tokens
at a time (see `context_start`) and the cache is refilled from the cropped context.
Both paths, cached and uncached, crop with that one function, so they compute the
same thing: the cache changes the speed, never the text.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from minigpt.model import GPT


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Preallocated as (B, nh, max_len, hs); `length` positions are filled.
    """

    def __init__(
        self,
        batch: int,
        n_head: int,
        max_len: int,
        head_size: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.k = torch.zeros(batch, n_head, max_len, head_size, device=device, dtype=dtype)
        self.v = torch.zeros(batch, n_head, max_len, head_size, device=device, dtype=dtype)
        self.max_len = max_len
        self.length = 0

    def update(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append T new positions and return all keys and values so far.

        k_new, v_new: (B, nh, T, hs) -> k, v: (B, nh, length + T, hs), views of the buffers.
        """
        start, end = self.length, self.length + k_new.size(2)
        if end > self.max_len:
            raise ValueError(
                f"KV cache overflow: {end} positions but the cache holds {self.max_len}; "
                f"reset() it or make it with a larger max_len"
            )
        if k_new.shape[:2] != self.k.shape[:2] or k_new.size(3) != self.k.size(3):
            raise ValueError(
                f"KV cache was made for (B, nh, *, hs) = {tuple(self.k.shape)} but got keys "
                f"{tuple(k_new.shape)}; make the caches with the batch size you feed"
            )
        self.k[:, :, start:end] = k_new
        self.v[:, :, start:end] = v_new
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, nh, T_k, hs)

    def reset(self) -> None:
        """Forget every position (the buffers are reused, not freed)."""
        self.length = 0


def make_caches(model: GPT, batch: int, max_len: int | None = None) -> list[KVCache]:
    """One empty KVCache per layer of `model`, on its device and dtype (max_len defaults to block_size)."""
    config = model.config
    max_len = config.block_size if max_len is None else max_len
    if not 1 <= max_len <= config.block_size:
        raise ValueError(f"max_len must be in [1, block_size={config.block_size}] (got {max_len})")
    p = model.wte.weight
    return [
        KVCache(batch, config.n_head, max_len, config.head_size, device=p.device, dtype=p.dtype)
        for _ in range(config.n_layer)
    ]


def context_start(length: int, block_size: int, slide: int) -> int:
    """Where the model's context begins when `length` tokens exist: the cropping policy.

    Up to block_size tokens the model sees them all. Past that the window moves in
    jumps of `slide` tokens, to start at the smallest multiple of `slide` that leaves at
    most block_size tokens. The context length therefore cycles through
    block_size + 1 - slide, ..., block_size. slide=1 is the classic "last block_size
    tokens" crop; a larger slide lets the cache be refilled only once every slide steps.
    """
    if length <= block_size:
        return 0
    return math.ceil((length - block_size) / slide) * slide


def validate_sampling(
    *,
    vocab_size: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    max_new_tokens: int = 1,
    num_samples: int = 1,
    slide: int | None = None,
    block_size: int | None = None,
) -> None:
    """Raise a one-line ValueError that names the bad argument and how to fix it."""
    if not (math.isfinite(temperature) and temperature >= 0):  # NaN fails both
        raise ValueError(
            f"temperature must be a finite number >= 0 (got {temperature}); "
            "use 0 for greedy decoding, 1 for plain sampling"
        )
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise ValueError(
            f"top_k must be between 1 and the vocabulary size {vocab_size} (got {top_k}); "
            f"leave it unset to sample from every token"
        )
    if top_p is not None and not 0 < top_p <= 1:  # NaN fails the comparison too
        raise ValueError(f"top_p must be in (0, 1] (got {top_p}); e.g. 0.9, or 1 to keep every token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1 (got {max_new_tokens}); ask for 1 or more tokens")
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1 (got {num_samples})")
    if slide is not None and block_size is not None and not 1 <= slide <= block_size:
        raise ValueError(
            f"slide must be between 1 and block_size={block_size} (got {slide}); "
            f"1 crops to the last block_size tokens every step"
        )


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row: logits (B, vocab) -> ids (B,).

    temperature 0 is greedy (argmax). Otherwise the logits are divided by the
    temperature, cut to the top_k highest (exactly k survive, ties broken by index),
    then to the nucleus (Holtzman et al., 2019): the smallest set of most likely tokens
    whose probability adds up to at least top_p, never empty. One token is drawn from
    what is left, using `generator` for reproducibility.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.size(-1):
        kept, where = torch.topk(logits, top_k, dim=-1)  # (B, k)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, where, kept)
    if top_p is not None and top_p < 1:
        probs, order = torch.sort(torch.softmax(logits, dim=-1), dim=-1, descending=True)  # (B, vocab)
        # Keep a token if the tokens ranked above it do not yet reach top_p; the most
        # likely token has nothing above it, so it always stays.
        before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


@dataclass
class GenerationStats:
    """Timing of one generate() run, filled in as tokens are produced.

    Times count only the work inside generate, not what the caller does between
    tokens (printing, decoding).
    """

    batch: int = 0
    """Rows generated in parallel (prompts x num_samples)."""
    prompt_tokens: int = 0
    """Prompt length per row."""
    steps: int = 0
    """New tokens produced per row so far."""
    positions_computed: int = 0
    """Positions fed through the model per row: the work done (far less with a cache)."""
    time_to_first_token_s: float = 0.0
    """Prompt processing plus the first sampled token."""
    elapsed_s: float = 0.0

    @property
    def tokens_per_s(self) -> float:
        """New tokens per second, all rows together."""
        return self.steps * self.batch / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """New tokens per second after the first one (the steady state, without the prompt)."""
        decode_s = self.elapsed_s - self.time_to_first_token_s
        return (self.steps - 1) * self.batch / decode_s if self.steps > 1 and decode_s > 0 else 0.0


def _as_batch(prompt: Sequence[int] | torch.Tensor, device: torch.device) -> torch.Tensor:
    """Prompt ids as a (B, T) long tensor."""
    if isinstance(prompt, torch.Tensor):
        idx = prompt if prompt.dim() == 2 else prompt.reshape(1, -1)  # (B, T)
    else:
        idx = torch.tensor(list(prompt), dtype=torch.long).reshape(1, -1)  # (1, T)
    if idx.dim() != 2:
        raise ValueError(f"prompt must be a list of ids or a (B, T) tensor (got shape {tuple(prompt.shape)})")
    return idx.to(device=device, dtype=torch.long)


def generate(
    model: GPT,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
    use_cache: bool = True,
    slide: int | None = None,
    eos_id: int | None = None,
    on_logits: Callable[[torch.Tensor], None] | None = None,
    stats: GenerationStats | None = None,
) -> Iterator[torch.Tensor]:
    """Stream new tokens: yields one (B,) tensor of ids per step, B = prompts x num_samples.

    prompt: a list of ids or a (B, T) tensor; each row is repeated num_samples times,
    and the samples are independent. seed (or a ready torch.Generator) makes sampling
    reproducible. slide: how far the context window jumps once it is full (default
    block_size // 2; see context_start). use_cache=False recomputes the whole context
    each step, cropped the same way: a slow reference. eos_id: a row stops at it and
    keeps repeating it; generation ends when every row has. on_logits receives each
    step's (B, vocab) logits before sampling; stats, if given, is filled in as it runs.
    Arguments are checked here, before the first token is asked for.
    """
    config = model.config
    device = model.wte.weight.device
    validate_sampling(
        vocab_size=config.vocab_size,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        num_samples=num_samples,
        slide=slide,
        block_size=config.block_size,
    )
    if seed is not None and generator is not None:
        raise ValueError("give either seed or generator, not both; a seed builds the generator for you")
    idx = _as_batch(prompt, device)
    if idx.size(1) == 0:
        raise ValueError("prompt is empty; give at least one token (e.g. a newline) to start from")
    if idx.min() < 0 or idx.max() >= config.vocab_size:
        raise ValueError(
            f"prompt has token ids outside [0, {config.vocab_size}); "
            f"encode it with the tokenizer the model was trained with"
        )
    if seed is not None:
        generator = torch.Generator(device=device).manual_seed(seed)
    slide = max(1, config.block_size // 2) if slide is None else slide
    decoder = _Decoder(model, idx.repeat_interleave(num_samples, dim=0), max_new_tokens, use_cache, slide)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    return _stream(model, decoder, sampling, eos_id, on_logits, stats if stats is not None else GenerationStats())


def _stream(
    model: GPT,
    decoder: _Decoder,
    sampling: dict,
    eos_id: int | None,
    on_logits: Callable[[torch.Tensor], None] | None,
    stats: GenerationStats,
) -> Iterator[torch.Tensor]:
    # Inference mode is entered per step, never held across a yield: the caller's
    # code between tokens must run with autograd as they left it.
    was_training = model.training
    model.eval()
    stats.batch, stats.prompt_tokens = decoder.tokens.size(0), decoder.prompt_len
    finished = None
    try:
        clock = time.perf_counter()
        for step in range(decoder.max_new_tokens):
            with torch.inference_mode():
                logits = decoder.next_logits()  # (B, vocab)
                if on_logits is not None:
                    on_logits(logits.clone())
                token = sample_logits(logits, **sampling)  # (B,)
                if eos_id is not None:
                    if finished is not None:
                        token = torch.where(finished, eos_id, token)
                    finished = token == eos_id
                decoder.append(token)
            token = token.clone()  # a normal tensor, usable outside inference mode
            stats.steps, stats.positions_computed = step + 1, decoder.positions_computed
            stats.elapsed_s += time.perf_counter() - clock
            if step == 0:
                stats.time_to_first_token_s = stats.elapsed_s
            yield token
            clock = time.perf_counter()
            if finished is not None and bool(finished.all()):
                break
    finally:
        model.train(was_training)


class _Decoder:
    """The token buffer and caches of one generation run; computes next-token logits."""

    def __init__(self, model: GPT, idx: torch.Tensor, max_new_tokens: int, use_cache: bool, slide: int):
        B, P = idx.shape
        self.model, self.slide, self.max_new_tokens = model, slide, max_new_tokens
        self.block_size = model.config.block_size
        self.prompt_len = P
        with torch.inference_mode():
            self.tokens = torch.empty(B, P + max_new_tokens, dtype=torch.long, device=idx.device)  # (B, P+N)
            self.tokens[:, :P] = idx
            # The last sampled token is never fed: at most P + N - 1 positions go in.
            max_len = min(self.block_size, P + max_new_tokens - 1)
            self.caches = make_caches(model, B, max_len) if use_cache else None
        self.length = P  # tokens so far
        self.cache_start = 0  # the cache holds tokens [cache_start, fed)
        self.fed = 0
        self.positions_computed = 0

    def next_logits(self) -> torch.Tensor:
        """Logits for the token after the current ones: (B, vocab)."""
        start = context_start(self.length, self.block_size, self.slide)
        if self.caches is None:
            # Reference path: the whole cropped context, every step.
            context = self.tokens[:, start : self.length]  # (B, T)
        else:
            if start != self.cache_start:
                # The window moved: absolute positions changed, so refill from the crop.
                for cache in self.caches:
                    cache.reset()
                self.cache_start = self.fed = start
            context = self.tokens[:, self.fed : self.length]  # (B, T), T = 1 between refills
            self.fed = self.length
        self.positions_computed += context.size(1)
        logits, _ = self.model(context, kv_caches=self.caches)  # (B, T, vocab)
        return logits[:, -1]

    def append(self, token: torch.Tensor) -> None:
        self.tokens[:, self.length] = token
        self.length += 1


def generate_ids(
    model: GPT,
    prompt: Sequence[int] | torch.Tensor,
    max_new_tokens: int,
    **kwargs,
) -> torch.Tensor:
    """Run generate() to the end: returns the prompt followed by the new ids, (B, T + steps).

    Takes the same keyword arguments as generate(). Fewer than max_new_tokens steps
    are returned only when every row reached eos_id.
    """
    steps = list(generate(model, prompt, max_new_tokens, **kwargs))
    num_samples = kwargs.get("num_samples", 1)
    idx = _as_batch(prompt, model.wte.weight.device).repeat_interleave(num_samples, dim=0)  # (B, T)
    return torch.cat([idx, torch.stack(steps, dim=1)], dim=1)  # (B, T + steps)
