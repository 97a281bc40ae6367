"""`python sample.py`: generate text from a trained checkpoint, or look at what it attends to.

    python sample.py                                   # the newest run under runs/, its best checkpoint
    python sample.py --run runs/NAME --prompt "ROMEO:" --num-samples 3 --seed 1
    python sample.py --temperature 0 --max-new-tokens 200          # greedy
    python sample.py --attention "To be, or not to be" --attention-png att/

Everything the model needs comes from the checkpoint: its config and its tokenizer. Generated
text goes to stdout as it is produced; which checkpoint was picked and the speed go to stderr,
so `python sample.py > out.txt` keeps just the text.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import torch

from minigpt import runtime
from minigpt.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, CheckpointError, load_checkpoint
from minigpt.config import configs_from_dict
from minigpt.generate import GenerationStats, generate, validate_sampling
from minigpt.model import GPT, ModelConfig
from minigpt.tokenizer import GPT2_EOT, Tokenizer, default_prompt, tokenizer_from_dict

PROBE_PREFIX = "attention_probe"
PROBE_INDEX = "attention_probes.jsonl"
"""One JSON line per attention probe, in the run folder: its TensorBoard step and its text."""


class UsageError(ValueError):
    """A bad command line (unknown flag, a value of the wrong type, conflicting flags)."""


class _Parser(argparse.ArgumentParser):
    # argparse prints the usage and exits; we want one `error: ...` line and exit code 2 from main().
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see python sample.py --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python sample.py",
        description="Generate text from a trained minigpt checkpoint, or log its attention maps.",
        allow_abbrev=False,
    )
    src = p.add_argument_group("checkpoint (default: the newest run under --runs-dir, its best checkpoint)")
    pick = src.add_mutually_exclusive_group()
    pick.add_argument("--ckpt", metavar="PATH", help="a checkpoint file, e.g. runs/NAME/ckpt_latest.pt")
    pick.add_argument("--run", metavar="DIR", help=f"a run folder: its {CHECKPOINT_BEST} ({CHECKPOINT_LATEST} if none)")
    src.add_argument("--runs-dir", default="runs", metavar="DIR", help="where to look for runs (default: runs)")

    gen = p.add_argument_group("generation")
    text = gen.add_mutually_exclusive_group()
    text.add_argument("--prompt", metavar="TEXT", help="text to continue (default: a newline, or <|endoftext|>)")
    text.add_argument("--prompt-file", metavar="FILE", help="read the prompt from a UTF-8 file")
    gen.add_argument("--num-samples", type=int, default=1, metavar="N", help="independent samples (default: 1)")
    gen.add_argument("--max-new-tokens", type=int, default=500, metavar="N", help="tokens per sample (default: 500)")
    gen.add_argument(
        "--temperature", type=float, default=0.8, metavar="T",
        help="0 is greedy, 1 the model's own distribution (default: 0.8)",
    )  # fmt: skip
    gen.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens only")
    gen.add_argument(
        "--top-p", type=float, metavar="P",
        help="nucleus sampling: keep the most likely tokens up to probability P, in (0, 1]",
    )  # fmt: skip
    gen.add_argument(
        "--seed", type=int, metavar="N", help="same seed, same text (default: a random seed, printed on stderr)"
    )
    gen.add_argument(
        "--slide", type=int, metavar="N",
        help="past block_size, slide the context window by N tokens (default: block_size // 2)",
    )  # fmt: skip
    gen.add_argument(
        "--no-kv-cache", action="store_true", help="recompute the whole context every step (slow; for comparison)"
    )

    hw = p.add_argument_group("hardware")
    hw.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help="auto: CUDA, then MPS, then CPU"
    )
    hw.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="autocast dtype; auto: bfloat16 on CUDA (float16 if unsupported), float32 elsewhere",
    )  # fmt: skip
    hw.add_argument(
        "--threads", type=int, default=1, metavar="N",
        help=f"CPU threads (default: 1; this machine has {os.cpu_count()}). More help big models or many "
        "samples on an idle CPU, but are far slower when other jobs share the cores",
    )  # fmt: skip

    att = p.add_argument_group("attention maps")
    att.add_argument(
        "--attention", nargs="?", const=True, metavar="TEXT",
        help="instead of sampling, run TEXT (or --prompt / --prompt-file) through the model and log every "
        f"layer's and head's attention map to TensorBoard under {PROBE_PREFIX}/",
    )  # fmt: skip
    att.add_argument(
        "--attention-generate", type=int, default=0, metavar="N",
        help="first generate N tokens after the text and include them in the maps (default: 0)",
    )  # fmt: skip
    att.add_argument("--attention-png", metavar="DIR", help="also write the maps as PNG files into DIR")
    return p


def normalize_flags(argv: Sequence[str], parser: argparse.ArgumentParser) -> list[str]:
    """Accept --max_new_tokens for --max-new-tokens (train.py's settings use underscores)."""
    known = {s for action in parser._actions for s in action.option_strings}
    out = []
    for arg in argv:
        name, eq, value = arg.partition("=")
        dashed = name.replace("_", "-")
        if name.startswith("--") and name not in known and dashed in known:
            arg = dashed + eq + value
        out.append(arg)
    return out


# ----------------------------------------------------------------------------------------------
# Checkpoint and model


def find_checkpoint(ckpt: str | None = None, run: str | None = None, runs_dir: str = "runs") -> tuple[Path, str]:
    """The checkpoint to sample from and why it was chosen: --ckpt, --run, or the newest run."""
    if ckpt:
        return Path(ckpt), "--ckpt"
    if run:
        path = Path(run)
        if path.is_file():
            return path, "--run"
        if not path.is_dir():
            raise CheckpointError(f"--run {run}: no such folder; pass a run folder such as {runs_dir}/NAME")
        found = _run_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"--run {run} holds no {CHECKPOINT_BEST} or {CHECKPOINT_LATEST}; train it with `python train.py`"
            )
        return found, "--run"
    root = Path(runs_dir)
    runs = {d: c for d in sorted(root.iterdir()) if d.is_dir() and (c := _run_checkpoint(d))} if root.is_dir() else {}
    if not runs:
        raise CheckpointError(
            f"no checkpoint found under {root}/; train a model first with `python train.py` "
            "(or point to one with --ckpt PATH or --run DIR)"
        )
    newest = max(runs, key=_last_saved)
    return runs[newest], f"the newest of {len(runs)} run(s) under {root}/"


def _run_checkpoint(run_dir: Path) -> Path | None:
    for name in (CHECKPOINT_BEST, CHECKPOINT_LATEST):
        if (run_dir / name).is_file():
            return run_dir / name
    return None


def _last_saved(run_dir: Path) -> float:
    """When the run last wrote a checkpoint (ckpt_latest.pt is rewritten at every evaluation)."""
    return max((run_dir / n).stat().st_mtime for n in (CHECKPOINT_BEST, CHECKPOINT_LATEST) if (run_dir / n).is_file())


@dataclass
class Loaded:
    """A model rebuilt from a checkpoint, with what it was trained with."""

    model: GPT
    tokenizer: Tokenizer
    path: Path
    iter: int | None
    best_val_loss: float | None


def load_model(path: str | Path, device: torch.device | str = "cpu") -> Loaded:
    """Rebuild the GPT and its tokenizer from a checkpoint, in eval mode on `device`."""
    path = Path(path)
    ckpt = load_checkpoint(path, map_location="cpu")
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["model"], dict):
        raise CheckpointError(f"{path} has a damaged 'config' or 'model' entry; use another checkpoint")
    model_cfg = configs_from_dict({"model": ModelConfig}, ckpt["config"], allow_extra_sections=True)["model"]
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    if tokenizer.vocab_size != model_cfg.vocab_size:
        raise CheckpointError(
            f"{path}: its tokenizer has {tokenizer.vocab_size} tokens but the model {model_cfg.vocab_size}; "
            "the checkpoint is inconsistent, use another one"
        )
    model = GPT(model_cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: the weights do not fit the saved model config ({first[:160]})") from None
    model.to(device).eval()
    best = ckpt.get("best_val_loss")
    return Loaded(model, tokenizer, path, ckpt.get("iter"), float(best) if best is not None else None)


def resolve_device(preference: str) -> torch.device:
    """--device: like training's (minigpt.runtime.resolve_device), with an error naming --device."""
    try:
        return runtime.resolve_device(preference)
    except ValueError:
        missing = {"cuda": "no CUDA device is visible", "mps": "Apple MPS is not available"}
        what = missing.get(preference, "unknown device")
        raise ValueError(f"--device {preference}: {what} on this machine; use --device auto or cpu") from None


def autocast(device: torch.device, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Mixed precision as in training; a no-op for float32."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


# ----------------------------------------------------------------------------------------------
# Prompt and text


def encode_prompt(tokenizer: Tokenizer, text: str, flag: str = "--prompt") -> list[int]:
    """Token ids of a prompt; a literal <|endoftext|> becomes that token where the tokenizer has it.

    Raises a ValueError naming `flag` for empty text or characters a char-level model never saw.
    """
    if not text:
        raise ValueError(f"{flag} is empty; give some text to start from, or leave it out to start from a newline")
    if tokenizer.kind == "char":
        unknown = sorted(set(text) - set(tokenizer.chars))  # type: ignore[attr-defined]
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise ValueError(
                f"{flag} has {len(unknown)} character(s) this char-level checkpoint never saw in training: {shown}; "
                "remove or replace them"
            )
    if tokenizer.eot_id is None:
        return tokenizer.encode(text)
    ids: list[int] = []
    for i, part in enumerate(text.split(GPT2_EOT)):
        if i:
            ids.append(tokenizer.eot_id)
        ids.extend(tokenizer.encode(part))
    return ids


def read_prompt_file(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"--prompt-file {path}: no such file") from None
    except UnicodeDecodeError:
        raise ValueError(f"--prompt-file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as e:
        raise ValueError(f"--prompt-file {path}: cannot read it ({e.strerror or e})") from None


class TextStream:
    """Token ids in, printable text out, one token at a time, never half a character.

    A BPE token can end inside a multi-byte UTF-8 character, and decoding it alone gives
    U+FFFD. So the ids since the last clean boundary are decoded together, and trailing
    U+FFFD are held back until a later token completes the character (or `flush()`).
    The text before them cannot change any more: UTF-8 decodes left to right.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        self._pending: list[int] = []
        self._sent = 0  # characters of decode(_pending) already returned

    def push(self, token_id: int) -> str:
        self._pending.append(token_id)
        text = self.tokenizer.decode(self._pending)
        stable = text.rstrip("\ufffd")
        new = stable[self._sent :]
        if len(stable) == len(text):  # a clean boundary: start afresh
            self._pending, self._sent = [], 0
        else:
            self._sent = len(stable)
        return new

    def flush(self) -> str:
        """Whatever is held back (an incomplete character shows as U+FFFD)."""
        text = self.tokenizer.decode(self._pending)[self._sent :] if self._pending else ""
        self._pending, self._sent = [], 0
        return text


# ----------------------------------------------------------------------------------------------
# Sampling


@dataclass
class SampleRequest:
    """Everything one `python sample.py` run asks for, checked against the model."""

    prompt_text: str
    prompt_ids: list[int]
    num_samples: int
    max_new_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int
    slide: int | None
    use_cache: bool

    def generate_kwargs(self) -> dict[str, Any]:
        return dict(
            temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, seed=self.seed,
            num_samples=self.num_samples, use_cache=self.use_cache, slide=self.slide,
        )  # fmt: skip


def stream_samples(
    loaded: Loaded, req: SampleRequest, out: TextIO, stats: GenerationStats, echo_prompt: bool = True
) -> torch.Tensor:
    """Generate req.num_samples samples as one batch, write them to `out`; returns the new ids (B, steps).

    The first sample is streamed token by token; the others are printed when the batch is done,
    each after a separator line.
    """
    n = req.num_samples
    tokens = generate(loaded.model, req.prompt_ids, req.max_new_tokens, stats=stats, **req.generate_kwargs())
    stream = TextStream(loaded.tokenizer)
    if n > 1:
        out.write(_separator(1, n))
    if echo_prompt:
        out.write(req.prompt_text)
    out.flush()
    steps = []
    for token in tokens:  # (B,) per step
        steps.append(token)
        out.write(stream.push(int(token[0])))
        out.flush()
    out.write(stream.flush())
    new = torch.stack(steps, dim=1).cpu()  # (B, steps)
    _end_line(out, loaded.tokenizer.decode(new[0].tolist()) or req.prompt_text)
    for i in range(1, n):
        text = loaded.tokenizer.decode(new[i].tolist())
        out.write(_separator(i + 1, n) + (req.prompt_text if echo_prompt else "") + text)
        _end_line(out, text or req.prompt_text)
    out.flush()
    return new


def _separator(i: int, n: int) -> str:
    return f"---------------- sample {i} of {n} ----------------\n"


def _end_line(out: TextIO, text: str) -> None:
    if not text.endswith("\n"):
        out.write("\n")


def format_stats(stats: GenerationStats, setup: str) -> str:
    """The speed line: tokens/s and time to first token (`setup` says cache, device, dtype)."""
    tokens = stats.steps * stats.batch
    return (
        f"{tokens} tokens in {stats.elapsed_s:.2f} s: {stats.tokens_per_s:.1f} tokens/s "
        f"({stats.decode_tokens_per_s:.1f} after the first), time to first token "
        f"{stats.time_to_first_token_s * 1000:.0f} ms (prompt {stats.prompt_tokens} tokens); {setup}"
    )


# ----------------------------------------------------------------------------------------------
# Attention probe


@dataclass
class ProbeResult:
    tokens: list[int]
    """The probed ids (at most block_size: the last ones)."""
    cropped_from: int
    """How many tokens there were before cropping."""
    step: int
    """TensorBoard step the maps were logged at."""
    log_dir: Path
    png_paths: list[Path]


def next_probe_step(log_dir: Path) -> int:
    """Probes of one run get steps 0, 1, 2, ...: the number of earlier probes in its index file."""
    index = log_dir / PROBE_INDEX
    if not index.is_file():
        return 0
    lines = [line for line in index.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(lines)


def probe_attention(
    loaded: Loaded,
    ids: Sequence[int],
    *,
    log_dir: Path | None = None,
    png_dir: str | Path | None = None,
) -> ProbeResult:
    """Log every layer's and head's attention map on `ids` to TensorBoard (and PNGs).

    Only the last block_size ids fit the model. Maps go to `log_dir` (default: the checkpoint's
    run folder) as {PROBE_PREFIX}/layer_{l}/head_{h} at a fresh step, with the text under
    {PROBE_PREFIX}/text; the index file there records which step holds which text.
    """
    from minigpt.metrics import TensorBoardLogger, save_attention_pngs  # matplotlib, TensorBoard: lazily

    block_size = loaded.model.config.block_size
    kept = list(ids)[-block_size:]
    weights = loaded.model.attention_maps(kept)  # (n_layer, nh, T, T)
    labels = [loaded.tokenizer.decode_token(t) for t in kept]
    log_dir = Path(log_dir) if log_dir is not None else loaded.path.parent
    step = next_probe_step(log_dir)
    text = loaded.tokenizer.decode(kept)
    with TensorBoardLogger(log_dir) as logger:
        logger.attention(weights, labels, step, prefix=PROBE_PREFIX)
        where = f"{loaded.path.name}" + (f", iter {loaded.iter}" if loaded.iter is not None else "")
        logger.text(f"{PROBE_PREFIX}/text", f"{text}\n\n({len(kept)} tokens; {where})", step)
    record = {
        "step": step, "text": text, "tokens": len(kept), "checkpoint": str(loaded.path),
        "iter": loaded.iter, "time": datetime.now().isoformat(timespec="seconds"),
    }  # fmt: skip
    with open(log_dir / PROBE_INDEX, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
    pngs = save_attention_pngs(weights, labels, png_dir) if png_dir is not None else []
    return ProbeResult(kept, len(ids), step, log_dir, pngs)


# ----------------------------------------------------------------------------------------------
# Entry point


def _prepare(args: argparse.Namespace, err: TextIO) -> tuple[Loaded, SampleRequest, runtime.Runtime]:
    """Check every argument and load the model; raises ValueError before anything is printed."""
    probing = args.attention is not None
    if not probing and (args.attention_png is not None or args.attention_generate):
        flag = "--attention-png" if args.attention_png is not None else "--attention-generate"
        raise UsageError(f"{flag} goes with --attention TEXT; add it, or drop {flag}")
    if probing:
        if isinstance(args.attention, str) and (args.prompt is not None or args.prompt_file is not None):
            raise UsageError("give the text once: --attention TEXT, or --attention with --prompt / --prompt-file")
        if args.num_samples != 1:
            raise UsageError("--num-samples does not apply to --attention (one text is probed)")
        if args.attention_generate < 0:
            raise ValueError(f"--attention-generate must be >= 0 (got {args.attention_generate})")

    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1 (got {args.threads})")
    device = resolve_device(args.device)
    rt = runtime.Runtime(device, runtime.resolve_dtype(args.dtype, device))
    path, why = find_checkpoint(args.ckpt, args.run, args.runs_dir)
    loaded = load_model(path, device)
    tok, cfg = loaded.tokenizer, loaded.model.config

    if probing and isinstance(args.attention, str):
        prompt_text, flag = args.attention, "--attention"
    elif args.prompt_file is not None:
        prompt_text, flag = read_prompt_file(args.prompt_file), f"--prompt-file {args.prompt_file}"
    elif args.prompt is not None:
        prompt_text, flag = args.prompt, "--prompt"
    elif probing and not args.attention_generate:
        raise UsageError('--attention needs text: --attention "TEXT", --prompt-file FILE, or --attention-generate N')
    else:
        prompt_text, flag = None, ""
    if prompt_text is None:
        prompt_text, prompt_ids = default_prompt(tok)
    else:
        prompt_ids = encode_prompt(tok, prompt_text, flag)
        if not prompt_ids:
            raise ValueError(f"{flag} encodes to no tokens; give some text")

    max_new = args.attention_generate if probing else args.max_new_tokens
    validate_sampling(
        vocab_size=cfg.vocab_size, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
        max_new_tokens=max(max_new, 1) if probing else max_new, num_samples=args.num_samples,
        slide=args.slide, block_size=cfg.block_size,
    )  # fmt: skip
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    req = SampleRequest(
        prompt_text, prompt_ids, args.num_samples, max_new, args.temperature, args.top_k, args.top_p,
        seed, args.slide, not args.no_kv_cache,
    )  # fmt: skip

    trained = f"iter {loaded.iter}" if loaded.iter is not None else "iter ?"
    if loaded.best_val_loss is not None and loaded.best_val_loss != float("inf"):
        trained += f", best val loss {loaded.best_val_loss:.4f}"
    print(f"checkpoint: {path} ({why}; {trained})", file=err)
    print(
        f"model: {loaded.model.num_params() / 1e6:.2f}M parameters, block_size {cfg.block_size}, "
        f"{tok.kind} tokenizer (vocab {tok.vocab_size}); {device.type} {rt.dtype_name}"
        + (f"; seed {seed}" if max_new else ""),
        file=err,
    )
    return loaded, req, rt


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = normalize_flags(sys.argv[1:] if argv is None else argv, parser)
    out, err = sys.stdout, sys.stderr
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help
        return int(e.code or 0)
    except UsageError as e:
        print(f"error: {e}", file=err)
        return 2
    stats = GenerationStats()
    speed = ""  # how the stats line names the setup, once known
    threads = torch.get_num_threads()
    try:
        loaded, req, rt = _prepare(args, err)
        speed = f"KV cache {'on' if req.use_cache else 'off'}, {rt.device.type} {rt.dtype_name}"
        if rt.device.type == "cpu":
            # A decoding step is many tiny ops; each multi-threaded op waits for every thread, so
            # when another job holds a core, 2 threads can run 100x slower than 1 (docs/benchmarks.md).
            torch.set_num_threads(args.threads)
            speed += f", {args.threads} thread{'s' if args.threads > 1 else ''}"
        if len(req.prompt_ids) > loaded.model.config.block_size and args.attention is None:
            print(
                f"note: the prompt is {len(req.prompt_ids)} tokens; the model sees at most the last "
                f"{loaded.model.config.block_size} (block_size)",
                file=err,
            )
        with autocast(rt.device, rt.amp_dtype):
            if args.attention is not None:
                _attention_mode(args, loaded, req, out, err, stats, speed)
            else:
                stream_samples(loaded, req, out, stats)
                print(format_stats(stats, speed), file=err)
        return 0
    except ValueError as e:  # CheckpointError, TokenizerError, ConfigError, bad flags
        print(f"error: {e}", file=err)
        return 2
    except BrokenPipeError:  # `python sample.py | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as e:  # e.g. an --attention-png folder or run folder we may not write to
        print(f"error: {e}", file=err)
        return 1
    except KeyboardInterrupt:
        out.write("\n")
        if stats.steps:
            print(format_stats(stats, speed) + " (interrupted)", file=err)
        print("interrupted", file=err)
        return 130
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests): leave it as found


def _attention_mode(
    args: argparse.Namespace,
    loaded: Loaded,
    req: SampleRequest,
    out: TextIO,
    err: TextIO,
    stats: GenerationStats,
    speed: str,
) -> None:
    ids = list(req.prompt_ids)
    if req.max_new_tokens:
        new = stream_samples(loaded, req, out, stats)
        print(format_stats(stats, speed), file=err)
        ids += new[0].tolist()
    block_size = loaded.model.config.block_size
    result = probe_attention(loaded, ids, png_dir=args.attention_png)
    cfg = loaded.model.config
    if result.cropped_from > len(result.tokens):
        print(
            f"note: the text is {result.cropped_from} tokens; the model sees at most block_size={block_size}, "
            f"so the maps show the last {len(result.tokens)}",
            file=err,
        )
    lines = [
        f"attention maps: {len(result.tokens)} tokens, {cfg.n_layer} layers x {cfg.n_head} heads",
        f"TensorBoard: {result.log_dir}, step {result.step}: images {PROBE_PREFIX}/layer_L/head_H and "
        f"{PROBE_PREFIX}/layer_L/all_heads, the text under {PROBE_PREFIX}/text (steps listed in {PROBE_INDEX})",
    ]
    if result.png_paths:
        lines.append(f"PNG: {len(result.png_paths)} files in {args.attention_png}")
    lines.append(f"view with: tensorboard --logdir {result.log_dir.parent}")
    print(*lines, sep="\n", file=out)

