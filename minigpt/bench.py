"""Benchmarks: training-step throughput, attention cost by context length, generation speed, a profile.

    python -m minigpt.bench train --batch_size 12 --attn manual sdpa --compile both
    python -m minigpt.bench {attention,generate,profile,all} [--markdown] [--json=bench.json]
    python -m minigpt.bench decode --model.preset baby-gpt --model.vocab_size 65 --threads 1 --weights float32 float16
    python -m minigpt.bench prepare --corpus_gb 0.2 0.66 --tokenizer gpt2   # data preparation of synthetic corpora
    python -m minigpt.bench prepare --corpus_gb 0.66 --tokenizer bpe:8192   # the same, training a BPE first

The model is the nano preset unless flags or a config file say otherwise, with random weights (speed
does not depend on them). Everything runs in one process; times are medians over repeats, after warm-up.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile, record_function

from minigpt import cli, entry
from minigpt.attention import CausalSelfAttention
from minigpt.checkpoint import find_checkpoint, load_checkpoint, load_model
from minigpt.config import BenchConfig, DataConfig, ModelConfig, TrainConfig
from minigpt.data import prepare
from minigpt.errors import Fault, UserError
from minigpt.generate import GenerationStats, generate_ids
from minigpt.model import GPT
from minigpt.params import TRAIN_ONLY_TABLES, flops_per_token
from minigpt.runtime import Runtime, cpu_has_native, measure_peak_flops, resolve_device, resolve_dtype
from minigpt.tables import human, text_table
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
        model,
        TrainConfig(batch_size=cfg.batch_size, warmup_iters=0),
        SimpleNamespace(next=lambda: batch),
        train_model=torch.compile(model) if compile else None,
        device=rt.device,
        amp_dtype=rt.amp_dtype,
    )


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
    row = {
        "config": f"{m.n_layer}L {m.n_embd}w T={m.block_size} B={cfg.batch_size}",
        "attn": attn,
        "compile": compile,
        "dtype": rt.dtype_name,
        "ms_per_iter": 1000 * sec,
        "tokens_per_s": tokens / sec,
        "first_step_s": first_step_s,
        "peak_memory": _peak_memory(rt.device),
    }
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


def dtype_quality(model: GPT, low: GPT, tokens: Sequence[int], positions: int = 10_000) -> dict[str, Any]:
    """What sampling from `low` (the sampler's copy, for_decoding) costs the float32 `model` on `positions`
    next-token predictions (windows of block_size from tokens): the largest logit difference, both mean
    losses, and top-1 agreement."""
    T = model.config.block_size
    n = -(-positions // T)  # windows
    if len(tokens) < n * T + 1:
        raise UserError(f"dtypes needs {n * T + 1} tokens of validation text, the corpus has {len(tokens)}")
    worst, agree, loss, low_loss = 0.0, 0, 0.0, 0.0
    with torch.no_grad():
        for i in range(n):
            window = torch.tensor(np.asarray(tokens[i * T : (i + 1) * T + 1], dtype=np.int64))[None]  # (1, T+1)
            x, y = window[:, :-1], window[:, 1:].flatten()
            ref, got = model.eval()(x)[0][0], low(x)[0][0].float()  # (T, vocab)
            worst = max(worst, (got - ref).abs().max().item())
            agree += (got.argmax(-1) == ref.argmax(-1)).sum().item()
            loss += F.cross_entropy(ref, y).item() / n
            low_loss += F.cross_entropy(got, y).item() / n
    return {
        "dtype": str(low.wte.weight.dtype).removeprefix("torch."),
        "positions": n * T,
        "max_logit_diff": worst,
        "val_loss_fp32": loss,
        "val_loss": low_loss,
        "loss_cost": low_loss - loss,
        "top1_agreement": agree / (n * T),
    }


def bench_dtypes(cfg: BenchConfig, device: torch.device) -> Rows:
    """Each sampling dtype on a trained checkpoint: quality against float32 (dtype_quality) and decode speed."""
    path, _ = find_checkpoint(cfg.ckpt)
    model, _, _ = load_model(path, device)
    val = prepare(cli.from_dict(DataConfig, load_checkpoint(path)["config"]["data"]), progress=False).load_split("val")
    dtypes = [torch.float32, torch.float16]
    if device.type != "cpu" or cpu_has_native(torch.bfloat16):
        dtypes.append(torch.bfloat16)
    rows = []
    for dtype in dtypes:
        low = copy.deepcopy(model).for_decoding(dtype)  # as sample.py runs it
        row = dtype_quality(model, low, val)
        for n in cfg.new_tokens:
            sec = _median_time(partial(generate_ids, low, [0], n, temperature=0.0), device, 1, 1, cfg.repeats)
            row[f"tokens_per_s_{n}"] = n / sec
        rows.append(row)
    print(f"# checkpoint: {path}")
    return rows


def _decoding_step_ms(model: GPT, n: int) -> float:
    """Milliseconds per greedy token after the first, over n tokens from a one-token prompt."""
    stats = GenerationStats()
    generate_ids(model, [0], n, temperature=0.0, stats=stats)
    return 1000 * (stats.elapsed_s - stats.time_to_first_token_s) / (n - 1)


def bench_decode(cfg: BenchConfig, device: torch.device) -> tuple[Rows, Rows]:
    """A decoding step against its floor, per sampling dtype (cfg.weights), in the same rounds: the step as
    the sampler runs it (for_decoding), the step on weights only converted (before), the step's matrix-vector
    products alone on each model's weights in its layout, and reading the float32 weights once (a sum over
    each). Medians over cfg.repeats rounds; steps are per token over max(cfg.new_tokens) greedy tokens.
    Returns those rows and the sampler's step profiled by part (profile_decode)."""
    torch.manual_seed(0)
    fp32 = GPT(cfg.model.replace(dropout=0.0)).to(device).eval()
    n = max(max(cfg.new_tokens), 2)
    fp32_weights = [m.weight for m in fp32.modules() if isinstance(m, nn.Linear)]
    models = {}
    for name in cfg.weights:
        dtype = getattr(torch, name)
        before, lean = copy.deepcopy(fp32).to(dtype), copy.deepcopy(fp32).for_decoding(dtype)
        models[name] = {"read": lambda: [w.sum() for w in fp32_weights], "products": _products(lean, dtype),
                        "products_before": _products(before, dtype), "before": before, "lean": lean}
        if cfg.compile != "off":
            models[name]["compiled"] = torch.compile(lean, dynamic=True)
            start = time.perf_counter()
            _decoding_step_ms(models[name]["compiled"], n)  # compiles; later rounds run the compiled code
            models[name]["compile_s"] = time.perf_counter() - start
    times: dict[str, dict[str, list[float]]] = {name: {} for name in models}
    for _ in range(cfg.repeats):
        for name, m in models.items():
            for key in ("read", "products", "products_before"):
                times[name].setdefault(key, []).append(1000 * _median_time(m[key], device, 3, 20, 1))
            for key in ("before", "lean", "compiled"):
                if key in m:
                    times[name].setdefault(key, []).append(_decoding_step_ms(m[key], n))
    rows = []
    for name, m in models.items():
        ms = {key: statistics.median(v) for key, v in times[name].items()}
        row = {"weights": name, "layout": _layout(m["lean"]), "MB_read": _linear_bytes(m["lean"]) / 1e6,
               "read_fp32_ms": ms["read"], "products_before_ms": ms["products_before"], "products_ms": ms["products"],
               "step_before_ms": ms["before"],
               "step_ms": ms["lean"], "step/products": ms["lean"] / ms["products"],
               "step/read_fp32": ms["lean"] / ms["read"], "tokens_per_s": 1000 / ms["lean"]}
        if "compiled" in ms:
            row.update(compiled_step_ms=ms["compiled"], compile_s=m["compile_s"])
        rows.append(row)
    return rows, profile_decode({name: m["lean"] for name, m in models.items()}, n)


def _products(model: GPT, dtype: torch.dtype) -> Callable[[], Any]:
    """A decoding step's matrix-vector products alone: each linear layer of model on one row."""
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    xs = [torch.randn(1, m.in_features, device=m.weight.device, dtype=dtype) for m in layers]
    return lambda: [F.linear(x, m.weight, m.bias) for m, x in zip(layers, xs)]


def _linear_bytes(model: GPT) -> int:
    return sum(m.weight.nbytes for m in model.modules() if isinstance(m, nn.Linear))


def _layout(model: GPT) -> str:
    w = model.h[0].mlp.c_fc.weight
    return "(out, in)" if w.is_contiguous() else "(in, out)"


# Operators by what they do in a decoding step, for profile_decode (self time; names as torch.profiler gives them).
DECODE_PARTS = {
    "matrix-vector products": ("aten::addmm", "aten::mm"),
    "attention over the cache": ("aten::_scaled_dot_product", "aten::bmm", "aten::_softmax", "aten::baddbmm"),
    "cache writes and copies": ("aten::copy_", "aten::clone"),
    "layer norms": ("aten::native_layer_norm",),
    "GELU": ("aten::gelu",),
    "residual adds, embeddings": ("aten::add", "aten::index_select", "aten::embedding", "aten::arange"),
    "sampling": ("aten::argmax", "aten::topk", "aten::multinomial", "aten::sort", "aten::cumsum", "aten::softmax"),
}


def profile_decode(models: dict[str, GPT], n: int) -> Rows:
    """Where a decoding step's time goes, per sampler's copy (name -> model), over n greedy tokens: operators'
    self time (torch.profiler) grouped by DECODE_PARTS, the other operators (views, transposes, allocations,
    dispatch layers like aten::linear), and the rest of the wall time: Python (modules, the generate loop)
    and the profiler's own cost."""
    columns: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            profiled = _decoding_step_ms(model, n)
        parts = dict.fromkeys([*DECODE_PARTS, "other operators"], 0.0)
        for e in prof.key_averages():
            part = next((k for k, names in DECODE_PARTS.items() if e.key.startswith(names)), "other operators")
            parts[part] += e.self_cpu_time_total / 1000 / n  # ms per token (the prompt's step is 1 of n)
        parts["Python and profiler"] = profiled - sum(parts.values())
        columns[name] = {"profiled step": profiled, **parts}
    return [{"part": part, **{f"{name}_ms": col[part] for name, col in columns.items()},
             **{f"{name}_share": col[part] / col["profiled step"] for name, col in columns.items()}}
            for part in next(iter(columns.values()))]


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
    prefixes = {
        "forward": "phase: forward",
        "backward": "autograd::engine::evaluate_function",
        "optimizer": "Optimizer.step",
    }
    phases = {
        phase: sum(e.cpu_time_total for e in events if e.key.startswith(prefix)) / 1000 / cfg.steps
        for phase, prefix in prefixes.items()
    }
    phases["other (clip, zero_grad, overheads)"] = wall_ms - sum(phases.values())
    rows = [{"phase": k, "ms_per_step": v, "share": v / wall_ms} for k, v in phases.items()]
    return rows, events.table(sort_by="self_cpu_time_total", row_limit=15)


def _synthetic_corpus(folder: Path, n_bytes: int, n_files: int) -> Path:
    """`n_bytes` of tiny Shakespeare's lines shuffled (plus some 2- to 4-byte characters), deterministic;
    one file, or a folder of `n_files` files."""
    shakespeare = Path(__file__).resolve().parent.parent / "data" / "shakespeare" / "input.txt"
    extra = ["café au lait, naïve résumé\n", "日本語のテキスト\n", "emoji 🙂 — “quoted”\n"] * 50
    lines = np.array(shakespeare.read_text(encoding="utf-8").splitlines(keepends=True) + extra, dtype=object)
    rng = np.random.default_rng(0)
    if n_files == 1:
        paths = [folder / "corpus.txt"]
    else:
        paths = [folder / "corpus" / f"part{i:04d}.txt" for i in range(n_files)]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        with open(path, "wb") as f:
            left = n_bytes // n_files
            while left > 0:  # about 1 MB of lines at a time
                block = "".join(lines[rng.permutation(len(lines))]).encode()[:left]
                block = block.decode(errors="ignore").encode()  # no character cut in half at the end
                f.write(block)
                left -= len(block)
    return paths[0].parent if n_files > 1 else paths[0]


def _tree_rss(pid: int) -> int:
    """Resident bytes of a process and all its descendants, from /proc (0 once it has exited)."""
    total, pids = 0, [pid]
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0]) * 1024 if "VmRSS:" in status else 0
            for task in os.listdir(f"/proc/{p}/task"):
                pids += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
        except (OSError, IndexError, ValueError):  # the process ended while we looked
            pass
    return total


def bench_prepare(cfg: BenchConfig) -> Rows:
    """Prepare synthetic corpora of cfg.corpus_gb GB in a child process: wall time, tokens/s and peak memory,
    both summed over the child and its worker processes (sampled every 50 ms from /proc, Linux only) and of
    the largest single process (ru_maxrss). With bpe:N, train_tokenizer_s is the training of its tokenizer
    (prepare times it, in meta.json), and tokens_per_s counts the rest of the wall time, as gpt2's does."""
    rows = []
    tokenizer, _, vocab = cfg.tokenizer.partition(":")  # bpe:8192 trains a BPE of 8,192 tokens first
    if tokenizer not in ("char", "gpt2", "bpe") or bool(vocab) != (tokenizer == "bpe") or not (vocab or "0").isdigit():
        raise UserError(f"--tokenizer {cfg.tokenizer!r} is not a tokenizer; give char, gpt2 or bpe:N (e.g. bpe:8192)")
    sized = {"vocab_size": int(vocab)} if vocab else {}
    for gb in cfg.corpus_gb:
        folder = Path(tempfile.mkdtemp(prefix="minigpt-bench-prepare-"))
        try:
            corpus = _synthetic_corpus(folder, int(gb * 1e9), cfg.corpus_files)
            data = DataConfig(
                path=str(corpus), tokenizer=tokenizer, cache_dir=str(folder / "cache"), workers=cfg.workers, **sized
            )
            code = f"from minigpt.config import *; from minigpt.data import prepare; prepare({data!r}, progress=False)"
            start, peak = time.perf_counter(), 0
            child = subprocess.Popen([sys.executable, "-c", code])
            while child.poll() is None:
                peak = max(peak, _tree_rss(child.pid))
                time.sleep(0.05)
            wall = time.perf_counter() - start
            if child.returncode:
                raise Fault(f"preparing the {gb} GB corpus failed (exit code {child.returncode}); see its error above")
            max_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024  # the largest process so far
            meta = json.loads(next((folder / "cache").glob("*/meta.json")).read_text())
            tokens = meta["train_tokens"] + meta["val_tokens"]
            trained = meta["tokenizer"].get("train_seconds", 0.0)  # bpe: training its tokenizer, the rest is as for gpt2
            rows.append({"corpus": f"{gb} GB, {cfg.corpus_files} file(s)", "tokenizer": cfg.tokenizer,
                         "tokens": tokens, "wall_s": wall, **({"train_tokenizer_s": trained} if vocab else {}),
                         "tokens_per_s": tokens / (wall - trained),
                         "peak_rss_all": human(peak, "B") if peak else "-", "peak_rss_largest": human(max_rss, "B")})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return rows


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
        try:
            cfg.model.replace(attn_impl=attn)
        except ValueError as e:  # ModelConfig's own check, which names the settings
            raise UserError(str(e)) from None
    if cfg.json:
        open(cfg.json, "w").close()  # so does an unwritable path
    cpu = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    machine += f"; torch {torch.__version__}; python {platform.python_version()}"
    m = cfg.model
    print(f"# {machine}")
    if cfg.what != "prepare":  # the data benchmark has no model
        shape = f"{m.n_layer} layers, {m.n_head} heads, {m.n_embd} wide, block {m.block_size}, vocab {m.vocab_size}"
        print(f"# model: {shape}")
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
    if cfg.what == "dtypes":
        results["dtypes"] = bench_dtypes(cfg, device)
    if cfg.what == "prepare":
        results["prepare"] = bench_prepare(cfg)
    if cfg.what == "profile":
        results["profile"], top = profile_train(cfg, rt)
        print(f"\n## top operators by self time (all profiled steps)\n\n{top}")
    if cfg.what == "decode":
        results["decode"], results["decode_profile"] = bench_decode(cfg, device)
    for name, rows in results.items():
        print(f"\n## {name}\n\n{format_rows(rows, cfg.markdown)}")
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump({"machine": machine, "config": cli.to_dict(cfg), "results": results}, f, indent=2)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def body() -> None:
        run(cli.parse(BenchConfig, argv, prog=PROG, ignore=TRAIN_ONLY_TABLES))

    return entry.run(body)


if __name__ == "__main__":
    sys.exit(main())
