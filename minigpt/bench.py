"""Benchmarks: training-step throughput, attention cost by context length, generation speed.

    python -m minigpt.bench train --preset nano --batch-size 12 --attn manual,sdpa
    python -m minigpt.bench attention --block-sizes 64,128,256,512,1024
    python -m minigpt.bench generate --preset nano --block-size 256 --new-tokens 100,500
    python -m minigpt.bench all --markdown docs/bench-latest.md

Everything runs in one process, after warm-up, and reports medians over repeats. The
weights are random: speed does not depend on what a model has learned.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from minigpt.attention import CausalSelfAttention
from minigpt.generate import generate
from minigpt.model import GPT, ModelConfig
from minigpt.params import flops_per_token
from minigpt.runtime import measure_peak_flops, resolve_device, resolve_dtype
from minigpt.trainer import TrainConfig, Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean seconds per call over `iters` calls, after warm-up."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        _sync(device)
        times.append((time.perf_counter() - start) / iters)
    return statistics.median(times)


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    # CPU: the process's peak resident set so far (ru_maxrss is KiB on Linux)
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (process)"


class _RandomBatches:
    """A fixed random batch, so the benchmark measures the model, not the data path."""

    def __init__(self, cfg: ModelConfig, batch_size: int, device: torch.device):
        g = torch.Generator().manual_seed(0)
        idx = torch.randint(0, cfg.vocab_size, (batch_size, cfg.block_size + 1), generator=g)
        self.x, self.y = idx[:, :-1].to(device), idx[:, 1:].to(device)

    def next(self):
        return self.x, self.y

    def state_dict(self):
        return {}


def bench_train(
    cfg: ModelConfig, *, batch_size: int, attn: str, compile: bool, device: torch.device,
    amp_dtype: torch.dtype | None, steps: int, warmup: int, repeats: int, peak_flops: float | None,
) -> dict[str, Any]:  # fmt: skip
    """One training step (forward, backward, clip, AdamW) of `cfg` with attn_impl=attn."""
    torch.manual_seed(0)
    cfg = replace(cfg, attn_impl=attn, dropout=0.0)
    model = GPT(cfg).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    train_model = torch.compile(model) if compile else model
    trainer = Trainer(
        model, TrainConfig(batch_size=batch_size, warmup_iters=0), _RandomBatches(cfg, batch_size, device),
        train_model=train_model, device=device, amp_dtype=amp_dtype,
    )  # fmt: skip
    t_compile = time.perf_counter()
    trainer.step()  # the first step compiles, if asked to
    first_step_s = time.perf_counter() - t_compile
    sec = _median_time(trainer.step, device, warmup, steps, repeats)
    tokens = batch_size * cfg.block_size
    row = {
        "config": f"{cfg.n_layer}L {cfg.n_embd}w T={cfg.block_size} B={batch_size}",
        "attn": attn,
        "compile": compile,
        "dtype": {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[amp_dtype],
        "ms_per_iter": 1000 * sec,
        "tokens_per_s": tokens / sec,
        "first_step_s": first_step_s,
        "peak_memory": _peak_memory(device),
    }
    if peak_flops:
        row["mfu"] = flops_per_token(cfg)["total"] * tokens / sec / peak_flops
    return row


def bench_attention(
    cfg: ModelConfig, *, block_sizes: list[int], batch_size: int, device: torch.device,
    warmup: int, iters: int, repeats: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Forward + backward of one attention layer alone, manual vs sdpa, per context length."""
    rows = []
    for T in block_sizes:
        for attn in ("manual", "sdpa"):
            layer_cfg = replace(cfg, block_size=T, attn_impl=attn, dropout=0.0)
            torch.manual_seed(0)
            layer = CausalSelfAttention(layer_cfg).to(device)
            x = torch.randn(batch_size, T, cfg.n_embd, device=device, requires_grad=True)

            def step():
                y, _ = layer(x)
                y.sum().backward()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sec = _median_time(step, device, warmup, iters, repeats)
            row = {"T": T, "attn": attn, "ms_fwd_bwd": 1000 * sec}
            if device.type == "cuda":
                row["peak_memory"] = f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
            else:
                # the (B, nh, T, T) score, weight and mask tensors the manual path keeps for backward
                row["attn_matrices"] = f"{3 * 4 * batch_size * cfg.n_head * T * T / 2**20:.1f} MiB" if attn == "manual" else "-"
            rows.append(row)
    return rows


def bench_generate(
    cfg: ModelConfig, *, new_tokens: list[int], device: torch.device, repeats: int
) -> list[dict[str, Any]]:
    """Tokens/s of greedy generation from a one-token prompt, with and without the KV cache."""
    torch.manual_seed(0)
    model = GPT(replace(cfg, dropout=0.0)).to(device).eval()
    rows = []
    for n in new_tokens:
        for use_cache in (True, False):
            times = []
            for _ in range(repeats + 1):  # the first run warms up
                start = time.perf_counter()
                for _ in generate(model, [0], n, temperature=0.0, use_cache=use_cache):
                    pass
                _sync(device)
                times.append(time.perf_counter() - start)
            sec = statistics.median(times[1:])
            rows.append({"new_tokens": n, "kv_cache": use_cache, "seconds": sec, "tokens_per_s": n / sec})
    return rows


def profile_train(
    cfg: ModelConfig, *, batch_size: int, device: torch.device, amp_dtype: torch.dtype | None, steps: int
) -> tuple[list[dict[str, Any]], str]:
    """Where a training step's time goes: phases (forward, backward, optimizer) and top ops."""
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.manual_seed(0)
    model = GPT(replace(cfg, dropout=0.0)).to(device)
    batches = _RandomBatches(cfg, batch_size, device)
    trainer = Trainer(model, TrainConfig(batch_size=batch_size, warmup_iters=0), batches, device=device,
                      amp_dtype=amp_dtype)  # fmt: skip
    amp = trainer.amp

    def step() -> None:
        with record_function("phase: data"):
            x, y = batches.next()
        with record_function("phase: forward"):
            with amp:
                _, loss = model(x, y)
        with record_function("phase: backward"):
            loss.backward()
        with record_function("phase: clip + optimizer"):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            trainer.optimizer.step()
            trainer.optimizer.zero_grad(set_to_none=True)
        with record_function("phase: loss.item()"):
            loss.item()

    for _ in range(5):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
    wall = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    rows = []
    for e in events:
        if e.key.startswith("phase: "):
            rows.append({"phase": e.key[7:], "ms_per_step": e.cpu_time_total / 1000 / steps,
                         "share": e.cpu_time_total / 1000 / steps / (1000 * wall)})  # fmt: skip
    rows.sort(key=lambda r: -r["ms_per_step"])
    top = events.table(sort_by="self_cpu_time_total", row_limit=15)
    return rows, top


def format_table(rows: list[dict[str, Any]], markdown: bool = False) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    for row in rows[1:]:
        keys += [k for k in row if k not in keys]

    def cell(key: str, v: Any) -> str:
        if key in ("mfu", "share"):
            return f"{v:.1%}"
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
        return str(v)

    table = [keys] + [[cell(k, r[k]) if k in r else "" for k in keys] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(table[0]) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(r) + " |" for r in table[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in table) for i in range(len(keys))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def machine_line(device: torch.device) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    return f"{what}; torch {torch.__version__}; python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m minigpt.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["train", "attention", "generate", "profile", "all"])
    parser.add_argument("--preset", default="nano", help="model preset (default: nano, nanoGPT's CPU shape)")
    parser.add_argument("--n-layer", type=int)
    parser.add_argument("--n-embd", type=int)
    parser.add_argument("--n-head", type=int)
    parser.add_argument("--block-size", type=int)
    parser.add_argument("--vocab-size", type=int)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--attn", default="manual,sdpa", help="attention paths for `train`, comma-separated")
    parser.add_argument("--compile", default="off", help="off, on, or both (for `train`)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto", help="auto: bfloat16 on CUDA, float32 elsewhere")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--block-sizes", default="64,128,256,512,1024")
    parser.add_argument("--new-tokens", default="100,500")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)

    try:
        device = resolve_device(args.device)
        amp_dtype = resolve_dtype(args.dtype, device)
        cfg = ModelConfig.from_preset(args.preset)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    changes = {k: getattr(args, k) for k in ("n_layer", "n_embd", "n_head", "block_size", "vocab_size")}
    cfg = replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    print(f"# {machine_line(device)}")
    print(f"# model: {cfg.n_layer} layers, {cfg.n_head} heads, {cfg.n_embd} wide, block {cfg.block_size}, "
          f"vocab {cfg.vocab_size}")
    results: dict[str, list[dict[str, Any]]] = {}
    if args.what in ("train", "all"):
        peak = measure_peak_flops(device) if device.type == "cuda" else None
        if peak:
            print(f"# MFU against a measured 8192^3 {args.dtype} matmul: {peak / 1e12:.0f} TFLOP/s")
        compiles = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
        rows = [
            bench_train(cfg, batch_size=args.batch_size, attn=attn, compile=c, device=device, amp_dtype=amp_dtype,
                        steps=args.steps, warmup=args.warmup, repeats=args.repeats, peak_flops=peak)
            for attn in args.attn.split(",") for c in compiles
        ]  # fmt: skip
        results["train"] = rows
    if args.what in ("attention", "all"):
        results["attention"] = bench_attention(
            cfg, block_sizes=[int(t) for t in args.block_sizes.split(",")], batch_size=args.batch_size,
            device=device, warmup=2, iters=5, repeats=args.repeats,
        )  # fmt: skip
    if args.what in ("generate", "all"):
        results["generate"] = bench_generate(
            cfg, new_tokens=[int(n) for n in args.new_tokens.split(",")], device=device, repeats=args.repeats
        )
    if args.what == "profile":
        rows, top = profile_train(cfg, batch_size=args.batch_size, device=device, amp_dtype=amp_dtype,
                                  steps=args.steps)  # fmt: skip
        results["profile"] = rows
        print("\n## top operators by self time (all profiled steps)\n")
        print(top)
    for name, rows in results.items():
        print(f"\n## {name}\n")
        print(format_table(rows, markdown=args.markdown))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_line(device), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
