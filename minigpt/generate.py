"""Text generation: sampling controls and a key/value cache.

`KVCache` keeps each layer's keys and values of the positions seen so far, so after the prompt each
step feeds the model only the newest token (T=1). Positions count from the start of the context (a
learned table, or rotary angles: the model turns each new query and key at its position, the cache
length), so past block_size the window slides by `slide` tokens at a time (`context_start`) and the
cache is refilled from the cropped context. Cached and uncached runs crop alike: the cache changes the speed, never
the text (docs/sampling.md).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from minigpt.errors import UserError
from minigpt.model import GPT


class KVCache:
    """One attention layer's keys and values so far: preallocated (B, nh, max_len, hs), `length` filled."""

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
    """One empty KVCache per layer of `model`, on its device (max_len defaults to block_size).

    The cache takes the dtype the model's attention works in: the weights', except in a CPU decoding copy
    with half-precision weights, which attends in float32 (GPT.for_decoding).
    """
    config = model.config
    max_len = config.block_size if max_len is None else max_len
    if not 1 <= max_len <= config.block_size:
        raise ValueError(f"max_len must be in [1, block_size={config.block_size}] (got {max_len})")
    p = model.wte.weight
    dtype = model.attention_dtype or p.dtype
    return [KVCache(batch, config.n_head, max_len, config.head_size, p.device, dtype) for _ in range(config.n_layer)]


def context_start(length: int, block_size: int, slide: int) -> int:
    """Where the model's context begins when `length` tokens exist: the cropping policy.

    Past block_size the window jumps `slide` tokens at a time, to the smallest multiple of `slide`
    that leaves at most block_size tokens, so the context length cycles through
    block_size + 1 - slide, ..., block_size. slide=1 is the classic "last block_size tokens" crop;
    a larger slide refills the cache only once every slide steps.
    """
    if length <= block_size:
        return 0
    return math.ceil((length - block_size) / slide) * slide


def sample_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick one token per row: logits (B, vocab) -> ids (B,).

    temperature 0 is greedy (argmax). Otherwise: divide by the temperature, keep the top_k highest
    (exactly k, ties broken by index), then the nucleus (Holtzman et al., 2019): the smallest set of
    most likely tokens whose probability reaches top_p, never empty. Draw one with `generator`.
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
        drop_sorted = torch.cumsum(probs, dim=-1) - probs >= top_p  # the mass ranked above each token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)


@dataclass
class GenerationStats:
    """Timing of one generate() run, filled in as it goes; only the work inside generate counts."""

    batch: int = 0  # rows generated in parallel (prompts x num_samples)
    prompt_tokens: int = 0  # prompt length per row
    steps: int = 0  # new tokens per row so far
    positions_computed: int = 0  # positions fed through the model per row: the work (far less with a cache)
    time_to_first_token_s: float = 0.0  # prompt processing plus the first sampled token
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
    idx = torch.as_tensor(prompt, dtype=torch.long, device=device)
    if idx.dim() == 1:
        idx = idx.unsqueeze(0)  # (1, T)
    if idx.dim() != 2:
        raise ValueError(f"prompt must be a list of ids or a (B, T) tensor (got shape {tuple(idx.shape)})")
    return idx


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

    prompt: a list of ids or a (B, T) tensor; each row is repeated num_samples times, the samples
    independent. seed (or a ready generator) makes sampling reproducible. slide: how far the full
    window jumps (default block_size // 2). use_cache=False recomputes the whole context each step:
    a slow reference. eos_id: a row stops at it and keeps repeating it; generation ends when every
    row has. on_logits gets each step's (B, vocab) logits before sampling; stats is filled in as it
    runs. Arguments are checked here, before the first token is asked for.
    """
    vocab_size, block_size = model.config.vocab_size, model.config.block_size
    slide = max(1, block_size // 2) if slide is None else slide
    _check_sampling(temperature, top_k, top_p, vocab_size)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens must be at least 1 (got {max_new_tokens}); ask for 1 or more tokens")
    if num_samples < 1:
        raise UserError(f"num_samples must be at least 1 (got {num_samples})")
    if not 1 <= slide <= block_size:
        raise UserError(
            f"slide must be between 1 and block_size={block_size} (got {slide}); "
            f"1 crops to the last block_size tokens every step"
        )
    if seed is not None and generator is not None:
        raise UserError("give either seed or generator, not both; a seed builds the generator for you")
    if seed is not None and not -(2**63) <= seed < 2**64:  # what torch.Generator.manual_seed takes
        raise UserError(f"seed must be in [0, 2**64) (got {seed})")
    idx = _as_batch(prompt, model.wte.weight.device)  # (B, T)
    if idx.size(1) == 0:
        raise UserError("prompt is empty; give at least one token (e.g. a newline) to start from")
    if idx.min() < 0 or idx.max() >= vocab_size:
        raise UserError(
            f"prompt has token ids outside [0, {vocab_size}); "
            "encode it with the tokenizer the model was trained with"
        )
    _check_memory(model, idx, num_samples, max_new_tokens, use_cache)
    if seed is not None:
        generator = torch.Generator(device=idx.device).manual_seed(seed)
    decoder = _Decoder(model, idx.repeat_interleave(num_samples, dim=0), max_new_tokens, use_cache, slide)
    sampling = dict(temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    return _stream(decoder, sampling, eos_id, on_logits, stats if stats is not None else GenerationStats())


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None, vocab_size: int) -> None:
    """Refuse sampling settings that sample_logits cannot honour, naming the fix."""
    if not (math.isfinite(temperature) and temperature >= 0):  # NaN fails both
        raise UserError(
            f"temperature must be a finite number >= 0 (got {temperature}); "
            "use 0 for greedy decoding, 1 for plain sampling"
        )
    if top_k is not None and not 1 <= top_k <= vocab_size:
        raise UserError(
            f"top_k must be between 1 and the vocabulary size {vocab_size} (got {top_k}); "
            f"leave it unset to sample from every token"
        )
    if top_p is not None and not 0 < top_p <= 1:  # NaN fails the comparison too
        raise UserError(f"top_p must be in (0, 1] (got {top_p}); e.g. 0.9, or 1 to keep every token")


def _check_memory(model: GPT, idx: torch.Tensor, num_samples: int, max_new_tokens: int, use_cache: bool) -> None:
    """Refuse a request that cannot fit in free memory; idx: the (B, T) prompt ids."""
    # Sizes are Python ints, so an absurd request is refused here, with its figure, before torch overflows or
    # fails to allocate
    need = memory_needed(model, idx.size(0) * num_samples, idx.size(1), max_new_tokens, use_cache)
    free = memory_free(idx.device)
    if free is not None and need > free:
        raise UserError(
            f"{idx.size(0) * num_samples} sample(s) of {idx.size(1)} prompt + {max_new_tokens} new tokens need about "
            f"{_bytes(need)} of memory, and this machine has {_bytes(free)} free ({idx.device.type}); ask for fewer "
            "samples (num_samples) or tokens (max_new_tokens)"
        )


def memory_needed(model: GPT, batch: int, prompt_len: int, max_new_tokens: int, use_cache: bool = True) -> int:
    """Bytes a generate() run holds at its peak, about: the token buffer (B, P + N), the KV caches, and one
    forward pass over the widest context it feeds (the logits and attention scores are most of it)."""
    c = model.config
    total = prompt_len + max_new_tokens
    tokens = batch * total * 8  # int64 ids
    cache_len = min(c.block_size, total - 1)
    caches = 2 * c.n_layer * batch * c.n_head * cache_len * c.head_size * 4 if use_cache else 0
    width = min(c.block_size, total)
    forward = batch * width * (c.vocab_size + c.n_head * width + c.ff_dim + 4 * c.n_embd) * 4  # float32 at most
    return tokens + caches + forward


def memory_free(device: torch.device) -> int | None:
    """Bytes free for new tensors: the GPU's free memory, else the machine's available RAM; None if unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:  # Linux: memory available without swapping
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")  # elsewhere: all of the RAM
    except (AttributeError, OSError, ValueError):
        return None


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024:
            return f"{n:.1f} {unit}" if unit != "B" else f"{n} B"
        n /= 1024
    return f"{n:,.0f} EiB"


def _stream(
    decoder: _Decoder, sampling: dict, eos_id: int | None, on_logits: Callable | None, stats: GenerationStats
) -> Iterator[torch.Tensor]:
    # Inference mode is entered per step, never held across a yield: the caller's
    # code between tokens must run with autograd as they left it.
    model = decoder.model
    was_training = model.training
    model.eval()
    stats.batch, stats.prompt_tokens = decoder.tokens.size(0), decoder.prompt_len
    finished = None
    try:
        clock = time.perf_counter()
        for step in range(decoder.max_new_tokens):
            with torch.inference_mode():
                logits = decoder.next_logits()  # (B, vocab)
                if step == 0 and not bool(torch.isfinite(logits).all()):  # checked once: a check per step costs
                    raise UserError(
                        "the model's scores for the prompt are NaN or inf: its weights overflow (a run that "
                        "diverged?); sample from an earlier checkpoint, or with dtype float32"
                    )
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
        self.model, self.slide, self.max_new_tokens, self.prompt_len = model, slide, max_new_tokens, P
        self.block_size = model.config.block_size
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


def generate_ids(model: GPT, prompt: Sequence[int] | torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """Run generate() (same keyword arguments) to the end: the prompt, then the new ids, (B, T + steps).

    Fewer than max_new_tokens steps come back only when every row reached eos_id.
    """
    idx = _as_batch(prompt, model.wte.weight.device)  # (B, T)
    new = torch.stack(list(generate(model, idx, max_new_tokens, **kwargs)), dim=1)  # (B * num_samples, steps)
    return torch.cat([idx.repeat_interleave(kwargs.get("num_samples", 1), dim=0), new], dim=1)
