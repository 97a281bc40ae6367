"""`python sample.py`: generate text from a trained checkpoint, or look at what it attends to.

Text goes to stdout as it is produced; the checkpoint picked and the speed go to stderr, so
`python sample.py > out.txt` keeps just the text. Settings: minigpt.config.SampleConfig.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

import torch

from minigpt import cli, entry, hf, runtime
from minigpt.checkpoint import find_checkpoint, load_model  # noqa: F401  (also sample.py's API)
from minigpt.config import SampleConfig
from minigpt.errors import UserError
from minigpt.generate import GenerationStats, generate
from minigpt.metrics import TensorBoardLogger, save_attention_pngs
from minigpt.model import GPT
from minigpt.roles import format_roles, head_roles, role_probes
from minigpt.tokenizer import GPT2_EOT, CharTokenizer, GPT2Tokenizer, Tokenizer, default_prompt, preview

PROMPT_FILE_LIMIT = 1 << 24
"""Characters a prompt file may hold: far more than any model here can see (it sees block_size tokens),
and a bound on what reading /dev/zero or a wrong, huge file costs."""


def read_prompt(cfg: SampleConfig, tokenizer: Tokenizer) -> tuple[str, list[int]]:
    """The text to start from and its ids: --prompt, --prompt_file, or the tokenizer's default.
    A literal <|endoftext|> in the text becomes that token where the tokenizer has it."""
    if cfg.prompt is None and cfg.prompt_file is None:
        return default_prompt(tokenizer)
    text, flag = cfg.prompt, "--prompt"
    if cfg.prompt_file is not None:
        flag = f"--prompt_file {cfg.prompt_file}"
        try:
            with open(cfg.prompt_file, encoding="utf-8") as f:
                text = f.read(PROMPT_FILE_LIMIT + 1)
        except FileNotFoundError:
            raise UserError(f"{flag}: no such file") from None
        except OSError as e:  # a folder, no permission: the user's file to fix, so bad input (exit 2)
            raise UserError(f"{flag}: cannot read it ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise UserError(f"{flag} is not UTF-8 text; save it as UTF-8") from None
        if len(text) > PROMPT_FILE_LIMIT:
            raise UserError(
                f"{flag} holds more than {PROMPT_FILE_LIMIT:,} characters; the model sees only its last "
                "block_size tokens, so give the end of it"
            )
    if not text:
        raise UserError(f"{flag} is empty; give some text to start from, or leave it out to start from a newline")
    if isinstance(tokenizer, CharTokenizer) and (unknown := sorted(set(text) - set(tokenizer.chars))):
        raise UserError(f"{flag} has {len(unknown)} character(s) this char-level checkpoint never saw in training: "
                        f"{preview(unknown, 10)}; remove or replace them")
    parts = text.split(GPT2_EOT) if tokenizer.eot_id is not None else [text]
    ids = tokenizer.encode(parts[0])
    for part in parts[1:]:
        ids += [tokenizer.eot_id, *tokenizer.encode(part)]
    return text, ids


def stream_text(tokenizer: Tokenizer, ids: Iterable[int]) -> Iterator[str]:
    """Text piece by piece as ids arrive, never half a character: a BPE token can end inside a multi-byte
    UTF-8 character, which alone decodes to U+FFFD, so the ids since the last clean boundary are decoded
    together and a trailing U+FFFD is held back until a later token completes the character (or ids run out)."""
    pending: list[int] = []
    sent = 0  # characters of decode(pending) already yielded
    for token_id in ids:
        pending.append(token_id)
        text = tokenizer.decode(pending)
        stable = text.rstrip("\ufffd")
        yield stable[sent:]
        pending, sent = ([], 0) if len(stable) == len(text) else (pending, len(stable))
    if pending:
        yield tokenizer.decode(pending)[sent:]


def write_samples(tokens: Iterator[torch.Tensor], tokenizer: Tokenizer, prompt: str, n: int, out: TextIO) -> list[int]:
    """Write n samples, each the prompt and its continuation: the first streamed token by token, the
    others when the batch is done, each after a separator line if n > 1. Returns the first's new ids."""
    steps: list[list[int]] = []  # the n new ids of each step

    def first_row() -> Iterator[int]:
        for token in tokens:  # (n,)
            steps.append(token.tolist())
            yield steps[-1][0]

    for i in range(n):
        text = (f"---------------- sample {i + 1} of {n} ----------------\n" if n > 1 else "") + prompt
        print(text, end="", file=out, flush=True)
        for piece in stream_text(tokenizer, first_row()) if i == 0 else [tokenizer.decode([s[i] for s in steps])]:
            print(piece, end="", file=out, flush=True)
            text += piece
        print("" if text.endswith("\n") else "\n", end="", file=out, flush=True)
    return [s[0] for s in steps]


def format_stats(stats: GenerationStats, setup: str) -> str:
    """The speed line: tokens/s and time to first token (`setup` says cache, device, dtype)."""
    return (f"{stats.steps * stats.batch} tokens in {stats.elapsed_s:.2f} s: {stats.tokens_per_s:.1f} tokens/s "
            f"({stats.decode_tokens_per_s:.1f} after the first), time to first token "
            f"{stats.time_to_first_token_s * 1000:.0f} ms (prompt {stats.prompt_tokens} tokens); {setup}")


def probe_attention(
    model: GPT, tokenizer: Tokenizer, ids: list[int], run_dir: Path, about: str, png_dir: str | None
) -> list[str]:
    """Log every layer's and head's attention map on the last block_size ids to TensorBoard under
    run_dir, at the next free step, and as PNGs into png_dir. Returns what to tell."""
    log_dir, c = run_dir / "attention_probe", model.config  # a TensorBoard run apart from training's
    ids = ids[-c.block_size :]
    weights = model.attention_maps(ids)  # (n_layer, nh, T, T)
    labels, text = [tokenizer.decode_token(t) for t in ids], tokenizer.decode(ids)
    index = log_dir / "probes.jsonl"  # one line per probe: probe i is step i
    step = index.read_bytes().count(b"\n") if index.is_file() else 0  # counted as bytes: any file counts
    # head roles; the induction probe draws the common tokens of this text (minigpt/roles.py)
    probes = role_probes(ids, ids, c.vocab_size, c.block_size)
    roles = head_roles(model, probes.text, probes.induction, text_maps=weights) if probes is not None else None
    with TensorBoardLogger(log_dir) as logger:
        logger.attention(weights, labels, step, probe=f"prompt_{step}", ids=ids)  # a probe per text: the Attention tab
        logger.text("probe/text", f"{text}\n\n({len(ids)} tokens; {about})", step)
        if roles is not None:
            logger.roles(roles, step, probes.uniform, probe=f"prompt_{step}")
    with open(index, "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": step, "text": text, "tokens": len(ids), "model": about}) + "\n")
    pngs = save_attention_pngs(weights, labels, png_dir) if png_dir is not None else []
    return [
        f"attention maps: {len(ids)} tokens, {c.n_layer} layers x {c.n_head} heads",
        f"TensorBoard: {log_dir}, step {step} (the probes' texts and steps are listed in {index.name})",
        *([f"PNG: {len(pngs)} files in {png_dir}"] if pngs else []),
        f"view with: tensorboard --logdir {run_dir.parent}",
        *(
            ["", "head roles (mean attention weight; docs/attention.md):", format_roles(roles, probes.uniform)]
            if roles
            else []
        ),
    ]


def weights_dtype(preference: str, device: torch.device) -> torch.dtype:
    """The dtype the sampler converts the weights to. At batch 1 each token reads every weight once, so
    float16 weights (half the bytes) decode faster on a CPU too; bfloat16 only where the CPU has it natively."""
    dtype = runtime.resolve_dtype(preference, device) or torch.float32
    if device.type == "cpu" and dtype == torch.bfloat16 and not runtime.cpu_has_native(dtype):
        raise UserError(
            "dtype=bfloat16 on this CPU has no native bfloat16 instructions (slower than float32); "
            "use dtype float16 or float32"
        )
    return dtype


def run(cfg: SampleConfig, out: TextIO, err: TextIO, stats: GenerationStats) -> None:
    """Sample (or probe attention) as cfg says; bad input raises ValueError before any output."""
    device = runtime.resolve_device(cfg.device)
    dtype = weights_dtype(cfg.dtype, device)
    if cfg.hf:  # a pretrained GPT-2; its attention probes go to runs/gpt2-<name>/
        folder = hf.find(cfg.hf)
        hf.check_gpt2_vocab(folder, "--hf")  # before its weights are read
        model, tokenizer = hf.load(str(folder), device=device), GPT2Tokenizer()
        source, why, trained = cfg.hf, "--hf", "pretrained"
        run_dir, about = Path(cfg.runs_dir) / f"hf-{Path(cfg.hf).name}", f"GPT-2 {cfg.hf}"
    else:
        source, why = find_checkpoint(cfg.ckpt, cfg.run, cfg.runs_dir)
        model, tokenizer, trained = load_model(source, device)
        run_dir, about = source.parent, f"{source.name}, {trained}"
    model = model.for_decoding(dtype)  # the checkpoint stays as it is; only the sampler's copy changes
    prompt, ids = read_prompt(cfg, tokenizer)
    max_new = cfg.attention_generate if cfg.attention else cfg.max_new_tokens
    seed = cfg.seed if cfg.seed is not None else random.SystemRandom().randrange(2**31)
    tokens = None
    if max_new:  # generate checks its arguments now, before anything is printed
        tokens = generate(
            model,
            ids,
            max_new,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            seed=seed,
            num_samples=cfg.num_samples,
            use_cache=cfg.kv_cache,
            slide=cfg.slide,
            stats=stats,
        )
    threads = f", {cfg.threads} thread{'s' if cfg.threads > 1 else ''}" if device.type == "cpu" else ""
    hardware = f"{device.type} {str(dtype).removeprefix('torch.')}{threads}"
    block_size = model.config.block_size
    print(f"{'weights' if cfg.hf else 'checkpoint'}: {source} ({why}; {trained})", file=err)
    print(
        f"model: {model.num_params() / 1e6:.2f}M parameters, block_size {block_size}, {tokenizer.kind} tokenizer "
        f"(vocab {tokenizer.vocab_size}); {hardware}" + (f"; seed {seed}" if max_new else ""),
        file=err,
    )
    if len(ids) > block_size and not cfg.attention:
        print(f"note: the prompt is {len(ids)} tokens; the model sees at most the last {block_size}", file=err)
    if tokens is not None:
        ids = ids + write_samples(tokens, tokenizer, prompt, cfg.num_samples, out)
        print(format_stats(stats, f"KV cache {'on' if cfg.kv_cache else 'off'}, {hardware}"), file=err)
    if cfg.attention and len(ids) > block_size:
        print(f"note: the text is {len(ids)} tokens; the maps show the last {block_size} (block_size)", file=err)
    if cfg.attention:
        print(*probe_attention(model, tokenizer, ids, run_dir, about, cfg.attention_png), sep="\n", file=out)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out, err = sys.stdout, sys.stderr
    stats = GenerationStats()
    threads = torch.get_num_threads()

    def body() -> None:
        cfg = cli.parse(SampleConfig, argv, prog="python sample.py")
        if cfg.threads > (cores := os.cpu_count() or 1):  # torch would take any number, up to an overflow
            raise UserError(
                f"threads={cfg.threads} is more than the {cores} CPU cores of this machine; use 1 to {cores} "
                "(1 is fastest on a shared machine)"
            )
        # A decoding step is many tiny ops; each multi-threaded op waits for every thread, so when
        # another job holds a core, 2 threads can run far slower than 1
        # (docs/benchmarks.md, "Threads on a shared CPU").
        torch.set_num_threads(cfg.threads)
        run(cfg, out, err, stats)

    def interrupted() -> str:  # end the half-written line; say how far it got
        out.write("\n")
        return format_stats(stats, "interrupted") if stats.steps else "interrupted"

    try:
        return entry.run(body, interrupted=interrupted)
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests): leave it as found
