"""Benchmarks: training-step throughput, attention cost by context length, generation speed, a profile.

    python -m minigpt.bench train --batch_size 12 --attn manual sdpa --compile both
    python -m minigpt.bench {attention,generate,profile,all} [--markdown] [--json=bench.json]

The model is the nano preset unless flags or a config file say otherwise, with random weights (speed
does not depend on them). Everything runs in one process; times are medians over repeats, after warm-up.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from types import SimpleNamespace
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from minigpt import cli
from minigpt.attention import CausalSelfAttention
from minigpt.config import BenchConfig, ModelConfig, TrainConfig
from minigpt.generate import generate_ids
from minigpt.model import GPT
from minigpt.params import TRAIN_ONLY_TABLES, flops_per_token, human, text_table
from minigpt.runtime import Runtime, measure_peak_flops, resolve_device, resolve_dtype
from minigpt.trainer import Trainer

PROG = "python -m minigpt.bench"
Rows = list[dict[str, Any]]


def _median_time(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean seconds per call over `iters` calls, after warm-up."""

    def clock() -> float:  # time.perf_counter, once the queued GPU work is done
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    for _ in range(warmup):
        fn()
    return statistics.median(timeit.repeat(fn, timer=clock, number=iters, repeat=repeats)) / iters


def _peak_memory(device: torch.device) -> str:
    if device.type == "cuda":
        return human(torch.cuda.max_memory_allocated(device), "B")
    # CPU: the process's peak resident set so far (ru_maxrss is KiB on Linux)
    return human(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "B") + " (process)"


def _trainer(cfg: BenchConfig, model_cfg: ModelConfig, rt: Runtime, compile: bool = False) -> Trainer:
    """The real training step (forward, backward, clip, AdamW) of a fresh model, no LR warmup."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, model_cfg.vocab_size, (cfg.batch_size, model_cfg.block_size + 1), generator=g)
    # one fixed batch, served forever: the benchmark measures the model, not the data path
    batch = idx[:, :-1].to(rt.device), idx[:, 1:].to(rt.device)  # (B, T) each
    torch.manual_seed(0)
    model = GPT(model_cfg.replace(dropout=0.0)).to(rt.device)
    return Trainer(
        model, TrainConfig(batch_size=cfg.batch_size, warmup_iters=0), SimpleNamespace(next=lambda: batch),
        train_model=torch.compile(model) if compile else None, device=rt.device, amp_dtype=rt.amp_dtype,
    )  # fmt: skip


def bench_train(cfg: BenchConfig, attn: str, compile: bool, rt: Runtime, peak_flops: float | None) -> dict[str, Any]:
    """Time one training step of cfg.model with attn_impl=attn, compiled or not."""
    if rt.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(rt.device)
    trainer = _trainer(cfg, cfg.model.replace(attn_impl=attn), rt, compile)
    m = trainer.model.config
    start = time.perf_counter()
    trainer.step()  # the first step compiles, if asked to
    first_step_s = time.perf_counter() - start
    sec = _median_time(trainer.step, rt.device, cfg.warmup, cfg.steps, cfg.repeats)
    tokens = cfg.batch_size * m.block_size
    row = {"config": f"{m.n_layer}L {m.n_embd}w T={m.block_size} B={cfg.batch_size}", "attn": attn,
           "compile": compile, "dtype": rt.dtype_name, "ms_per_iter": 1000 * sec, "tokens_per_s": tokens / sec,
           "first_step_s": first_step_s, "peak_memory": _peak_memory(rt.device)}  # fmt: skip
    if peak_flops:
        row["mfu"] = flops_per_token(m)["total"] * tokens / sec / peak_flops
    return row


def bench_attention(cfg: BenchConfig, device: torch.device) -> Rows:
    """Forward + backward of one attention layer alone, for each path in cfg.attn and each context length."""
    rows = []
    for T in cfg.block_sizes:
        for attn in cfg.attn:
            torch.manual_seed(0)
            layer = CausalSelfAttention(cfg.model.replace(block_size=T, attn_impl=attn, dropout=0.0)).to(device)
            x = torch.randn(cfg.batch_size, T, cfg.model.n_embd, device=device, requires_grad=True)  # (B, T, C)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            sec = _median_time(lambda: layer(x)[0].sum().backward(), device, warmup=2, iters=5, repeats=cfg.repeats)
            row = {"T": T, "attn": attn, "ms_fwd_bwd": 1000 * sec}
            if device.type == "cuda":
                row["peak_memory"] = _peak_memory(device)
            else:  # the (B, nh, T, T) fp32 score, weight and mask tensors the manual path keeps for backward
                size = 3 * 4 * cfg.batch_size * cfg.model.n_head * T * T
                row["attn_matrices"] = human(size, "B") if attn == "manual" else "-"
            rows.append(row)
    return rows


def bench_generate(cfg: BenchConfig, device: torch.device) -> Rows:
    """Tokens/s of greedy generation from a one-token prompt, with and without the KV cache."""
    torch.manual_seed(0)
    model = GPT(cfg.model.replace(dropout=0.0)).to(device).eval()
    rows = []
    for n in cfg.new_tokens:
        for use_cache in (True, False):
            gen = partial(generate_ids, model, [0], n, temperature=0.0, use_cache=use_cache)
            sec = _median_time(gen, device, warmup=1, iters=1, repeats=cfg.repeats)
            rows.append({"new_tokens": n, "kv_cache": use_cache, "seconds": sec, "tokens_per_s": n / sec})
    return rows


def profile_train(cfg: BenchConfig, rt: Runtime) -> tuple[Rows, str]:
    """Where the trainer's step spends its time (CPU-side) by phase, and the top operators.

    backward sums autograd's per-node events, optimizer is torch's "Optimizer.step" event, and other
    is the rest of the wall time (gradient clipping, zero_grad, loss.item(), autograd's own overhead).
    """
    trainer = _trainer(cfg, cfg.model, rt)
    trainer.model.forward = record_function("phase: forward")(trainer.model.forward)
    for _ in range(cfg.warmup):
        trainer.step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if rt.device.type == "cuda" else [])
    start = time.perf_counter()
    with profile(activities=activities) as prof:
        for _ in range(cfg.steps):
            trainer.step()
    wall_ms = 1000 * (time.perf_counter() - start) / cfg.steps
    events = prof.key_averages()
    prefixes = {"forward": "phase: forward", "backward": "autograd::engine::evaluate_function",
                "optimizer": "Optimizer.step"}  # fmt: skip
    phases = {phase: sum(e.cpu_time_total for e in events if e.key.startswith(prefix)) / 1000 / cfg.steps
              for phase, prefix in prefixes.items()}  # fmt: skip
    phases["other (clip, zero_grad, overheads)"] = wall_ms - sum(phases.values())
    rows = [{"phase": k, "ms_per_step": v, "share": v / wall_ms} for k, v in phases.items()]
    return rows, events.table(sort_by="self_cpu_time_total", row_limit=15)


def format_rows(rows: Rows, markdown: bool = False) -> str:
    """Result rows as one table; fractions (mfu, share) as percentages, other floats by human()."""
    keys = list(dict.fromkeys(k for row in rows for k in row))

    def cell(key: str, v: Any) -> str:
        return f"{v:.1%}" if key in ("mfu", "share") else human(v) if isinstance(v, float) else str(v)

    return text_table([keys] + [[cell(k, r[k]) if k in r else "" for k in keys] for r in rows], markdown=markdown)


def run(cfg: BenchConfig) -> dict[str, Rows]:
    """Run the benchmarks cfg.what names, printing the machine, the model and each table."""
    device = resolve_device(cfg.device)
    rt = Runtime(device, resolve_dtype(cfg.dtype, device))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    for attn in cfg.attn:  # a bad pair (additive scores have no sdpa kernel) fails before any timing
        cfg.model.replace(attn_impl=attn)
    if cfg.json:
        open(cfg.json, "w").close()  # so does an unwritable path
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    machine += f"; torch {torch.__version__}; python {platform.python_version()}"
    m = cfg.model
    print(f"# {machine}")
    print(f"# model: {m.n_layer} layers, {m.n_head} heads, {m.n_embd} wide, block {m.block_size}, vocab {m.vocab_size}")
    results: dict[str, Rows] = {}
    if cfg.what in ("train", "all"):
        peak = measure_peak_flops(device) if device.type == "cuda" else None
        if peak:
            print(f"# MFU against a measured bf16 8192^3 matmul: {peak / 1e12:.0f} TFLOP/s")
        compiles = {"off": [False], "on": [True], "both": [False, True]}[cfg.compile]
        results["train"] = [bench_train(cfg, a, c, rt, peak) for a in cfg.attn for c in compiles]
    if cfg.what in ("attention", "all"):
        results["attention"] = bench_attention(cfg, device)
    if cfg.what in ("generate", "all"):
        results["generate"] = bench_generate(cfg, device)
    if cfg.what == "profile":
        results["profile"], top = profile_train(cfg, rt)
        print(f"\n## top operators by self time (all profiled steps)\n\n{top}")
    for name, rows in results.items():
        print(f"\n## {name}\n\n{format_rows(rows, cfg.markdown)}")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump({"machine": machine, "config": cli.to_dict(cfg), "results": results}, f, indent=2)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    try:
        run(cli.parse(BenchConfig, sys.argv[1:] if argv is None else argv, prog=PROG, ignore=TRAIN_ONLY_TABLES))
    except BrokenPipeError:  # `... | head`
        return cli.reader_left()
    except (ValueError, OSError) as e:  # cli.ConfigError included; OSError: an unwritable --json path
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
