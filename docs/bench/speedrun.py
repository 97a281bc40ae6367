"""The CPU speedrun, timed against nanoGPT's CPU recipe: whole processes, alternating, the same threads.

    python docs/bench/speedrun.py --nanogpt /tmp/nanogpt [--runs 3] [--threads 2] [--config configs/speedrun-cpu.toml]
    python docs/bench/speedrun.py --runs 2 --ablate "model.no_qk_norm" --ablate "train.optimizer=adamw train.lr=4e-3"

--nanogpt is a folder holding nanoGPT's train.py, model.py, configurator.py and
config/train_shakespeare_char.py (e.g. extracted with `git show HEAD:train.py`); nothing of nanoGPT lives in
this repo and nothing is downloaded. nanoGPT's data/shakespeare_char/prepare.py downloads the text, so the
script writes its train.bin, val.bin and meta.pkl itself from data/shakespeare/input.txt as prepare.py does:
the sorted characters as the vocabulary, uint16 ids, the first 90% of the characters for train and the last
10% for val. That is minigpt's split too (data.val_fraction 0.1), and the script checks the config keeps it.

nanoGPT runs its README's CPU recipe (4 layers, 4 heads, 128 wide, block 64, batch 12, lr 1e-3, 2,000 steps,
an evaluation of 20 random batches per split every 250 steps); minigpt runs `python train.py CONFIG`. Each
round runs every tool once as a fresh process (alternating), with OMP_NUM_THREADS=MKL_NUM_THREADS=--threads
(and --train.threads for minigpt; its train.py also sets GOMP_SPINCOUNT=1000, as it always does, where nanoGPT
keeps libgomp's default spin). Every line a process prints is timestamped from its start (Python
unbuffered), so the time to the loss counts imports, data loading, evaluation and logging.

Reported per tool, as medians over the runs: seconds from process start to the first evaluation with val
loss <= --target, the step of that evaluation, ms per step (the wall time between the first evaluation and
that one over the steps between them, so evaluation and logging are in it; from the line before the first
step when there is no earlier evaluation), and the final val loss.

After the rounds, the last round's final checkpoints are scored on the whole val split (every
non-overlapping 64-token window: 1,742 windows, 111,488 tokens, the same for both tools, so a lucky evaluation sample
cannot flatter either), and each tool's own sample.py prints --sample_tokens of text from them.

--ablate adds rows: each is the speedrun config with a few --section.key=value overrides (space-separated,
without the leading dashes), one change added to or taken out of the speedrun. Without --nanogpt only the
minigpt rows run.
"""

import argparse
import dataclasses
import os
import pickle
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
TEXT = ROOT / "data/shakespeare/input.txt"
NANOGPT_EVAL_TOKENS = 20 * 12 * 64  # nanoGPT's CPU recipe: eval_iters 20 x batch 12 x block 64
NANOGPT_RECIPE = (  # its README's CPU command, after the config file
    "--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 "
    "--n_layer=4 --n_head=4 --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0"
).split()

# nanoGPT prints "step 250: train loss 2.0321, val loss 2.0877", minigpt "iter   250: train loss ..., val loss ..."
# (or "iter   250: val loss ..." with --train.no_eval_train)
EVAL_LINE = re.compile(r"\b(?:step|iter)\s+(\d+):(?: train loss \S+,)? val loss ([0-9.naif]+)")


@dataclass
class Run:
    """One process: its timestamped output and what it reached."""

    lines: list[tuple[float, str]]  # (seconds since the process started, line)
    seconds: float  # the whole process
    evals: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, step, val loss)

    def hit(self, target: float) -> tuple[float, int] | None:
        """(seconds, step) of the first evaluation with val loss <= target, or None."""
        return next(((t, step) for t, step, val in self.evals if val <= target), None)

    def ms_per_step(self, target: float) -> float | None:
        """Wall ms per step from the first evaluation to the one that reached target (or the last one). A run
        whose first evaluation is that one (train.eval_start) counts from the line printed before it, at step 0."""
        end = self.hit(target) or (self.evals[-1][:2] if self.evals else None)
        if end is None or end[1] == 0:
            return None
        t0, s0, _ = self.evals[0]
        if s0 >= end[1]:
            t0, s0 = max((t for t, _ in self.lines if t < end[0]), default=0.0), 0
        return 1000 * (end[0] - t0) / (end[1] - s0)

    @property
    def final_val(self) -> float:
        return self.evals[-1][2] if self.evals else float("nan")


def parse_output(lines: list[tuple[float, str]], seconds: float) -> Run:
    """The evaluation lines of a run's timestamped output (either tool's format)."""
    evals = []
    for t, line in lines:
        if m := EVAL_LINE.search(line):
            evals.append((t, int(m.group(1)), float(m.group(2))))
    return Run(lines, seconds, evals)


def write_nanogpt_data(folder: Path, text: str) -> None:
    """data/shakespeare_char/{train.bin,val.bin,meta.pkl} under folder, as nanoGPT's prepare.py writes them."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    out = folder / "data/shakespeare_char"
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", text[: int(n * 0.9)]), ("val", text[int(n * 0.9) :])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(out / f"{name}.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}, f)


def check_config(config: str, overrides: list[str]) -> str:
    """Refuse a minigpt config that would not be a fair comparison; return a one-line description of it."""
    sys.path.insert(0, str(ROOT))
    from minigpt.model import GPT  # noqa: E402 (the bench's own flags are parsed before torch loads)
    from minigpt.run import resolve

    cfg, _, _ = resolve([config, *overrides])
    m, t, d = cfg.model, cfg.train, cfg.data
    eval_tokens = t.eval_iters * t.batch_size * m.block_size
    same = {
        "model.n_layer": (m.n_layer, 4),
        "model.n_embd": (m.n_embd, 128),
        "model.block_size": (m.block_size, 64),
        "data.tokenizer": (d.tokenizer, "char"),
        "data.val_fraction": (d.val_fraction, 0.1),
        "data.path": (Path(d.path).name, "input.txt"),
    }
    problems = [f"{key} is {got!r}, nanoGPT's recipe has {want!r}" for key, (got, want) in same.items() if got != want]
    if eval_tokens < NANOGPT_EVAL_TOKENS:
        problems.append(f"evaluation sees {eval_tokens:,} val tokens, fewer than nanoGPT's {NANOGPT_EVAL_TOKENS:,}")
    if problems:
        sys.exit(f"{config} {' '.join(overrides)}: not comparable with nanoGPT: {'; '.join(problems)}")
    params = GPT(dataclasses.replace(m, vocab_size=65)).num_params()
    return f"{params:,} params, batch {t.batch_size}, eval {t.eval_iters} x {t.batch_size} x {m.block_size} tokens"


def run_timed(argv: list[str], cwd: Path, threads: int) -> Run:
    """Run one process to its end, timestamping every line of its output (stdout and stderr) from its start."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    lines = []
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    proc.wait()
    seconds = time.perf_counter() - start
    if proc.returncode != 0:  # reported, and counted as not reaching the target; the other rows go on
        tail = "\n".join(line for _, line in lines[-10:])
        print(f"failed ({proc.returncode}): {shlex.join(argv)}\n{tail}", flush=True)
    return parse_output(lines, seconds)


def tools(args: argparse.Namespace, work: Path, r: int) -> dict[str, tuple[list[str], Path]]:
    """Row name -> (argv, working directory) for round r."""
    py = [sys.executable, "-u"]
    rows = {}
    if args.nanogpt:
        config = str(args.nanogpt / "config/train_shakespeare_char.py")
        argv = [*py, str(args.nanogpt / "train.py"), config, *NANOGPT_RECIPE, f"--out_dir={work / f'nanogpt-{r}'}"]
        rows["nanoGPT CPU recipe"] = (argv, work)
    for i, (name, overrides) in enumerate(variants(args).items()):
        where = [f"--train.threads={args.threads}", f"--train.out_dir={work / 'runs'}", f"--train.run_name=v{i}-r{r}"]
        rows[name] = ([*py, str(ROOT / "train.py"), args.config, *overrides, *where], ROOT)
    return rows


def variants(args: argparse.Namespace) -> dict[str, list[str]]:
    """The minigpt rows: the speedrun config, then each --ablate change (as overrides)."""
    rows = {f"minigpt {args.config}": []}
    for change in args.ablate:
        rows[f"  {change}"] = ["--" + c.removeprefix("--") for c in change.split()]
    return rows


def whole_val_loss(model, val: np.ndarray, T: int = 64) -> float:
    """Mean next-token loss of model(x, y) -> (logits, loss) over every non-overlapping T-window of val."""
    import torch

    n = (len(val) - 1) // T
    ids = torch.from_numpy(val[: n * T + 1].astype(np.int64))
    x, y = ids[:-1].view(n, T), ids[1:].view(n, T)  # (n, T) each
    total = 0.0
    with torch.no_grad():
        for i in range(0, n, 256):
            total += model(x[i : i + 256], y[i : i + 256])[1].item() * len(x[i : i + 256])
    return total / n


def quality(args: argparse.Namespace, work: Path, r: int, names: list[str]) -> None:
    """Whole-val loss and a text sample of round r's final checkpoints (nanoGPT's and each minigpt row's)."""
    import importlib.util

    import torch

    from minigpt.checkpoint import load_model

    torch.set_num_threads(1)
    val = np.fromfile(work / "data/shakespeare_char/val.bin", dtype=np.uint16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    n = str(args.sample_tokens)
    for name in names:
        i = names.index(name) - bool(args.nanogpt)
        path = work / (f"nanogpt-{r}/ckpt.pt" if name.startswith("nanoGPT") else f"runs/v{i}-r{r}/ckpt_best.pt")
        if not path.exists():
            print(f"\n{name.strip()}: no checkpoint ({path})")
            continue
        if name.startswith("nanoGPT"):
            spec = importlib.util.spec_from_file_location("nanogpt_model", args.nanogpt / "model.py")
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
            model = mod.GPT(mod.GPTConfig(**ckpt["model_args"]))
            model.load_state_dict(ckpt["model"])
            step = f"iter {ckpt['iter_num']}"
            argv = [sys.executable, str(args.nanogpt / "sample.py"), f"--out_dir={work / f'nanogpt-{r}'}",
                    "--device=cpu", "--num_samples=1", f"--max_new_tokens={n}"]
        else:
            model, _, step = load_model(path, "cpu")
            argv = [sys.executable, str(ROOT / "sample.py"), "--ckpt", str(path), "--max_new_tokens", n, "--seed", "1"]
        loss = whole_val_loss(model.eval(), val)
        print(f"\n{name.strip()} (round {r + 1}, {step}): loss on the whole val split {loss:.4f}")
        if args.sample_tokens:
            text = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True).stdout
            skip = ("Overriding", "number of parameters", "Loading meta")  # nanoGPT's own notes
            print("\n".join(ln for ln in text.split("---------------")[0].splitlines() if not ln.startswith(skip)))


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    flags = next((ln for ln in lscpu.splitlines() if ln.startswith("Flags")), "").split()
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model or platform.processor() or platform.machine()} ({isa}), {os.cpu_count()} logical CPUs"


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(results: dict[str, list[Run]], target: float) -> list[str]:
    """The Markdown table: medians over each row's runs; the first row is the baseline for the ratio."""
    out = [
        f"| run | time to val <= {target} (s) | steps to it | ms/step | final val loss | reached | vs first row |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = None
    for name, runs in results.items():
        hits = [h for r in runs if (h := r.hit(target))]
        t = statistics.median(h[0] for h in hits) if hits else None
        steps = statistics.median(h[1] for h in hits) if hits else None
        ms = [m for r in runs if (m := r.ms_per_step(target)) is not None]
        base = base or t
        ratio = f"{t / base:.2f}x" if t and base else "-"
        ms_step = statistics.median(ms) if ms else None
        out.append(
            f"| {name.strip()} | {fmt(t, '.1f')} | {fmt(steps, '.0f')} | {fmt(ms_step, '.1f')} "
            f"| {statistics.median(r.final_val for r in runs):.4f} | {len(hits)}/{len(runs)} | {ratio} |"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, help="has nanoGPT's train.py, model.py, configurator.py, config/")
    p.add_argument("--config", default="configs/speedrun-cpu.toml")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--target", type=float, default=1.886, help="the val loss to reach (nanoGPT's: 1.8857)")
    p.add_argument("--ablate", action="append", default=[], help='e.g. "model.no_qk_norm" (repeatable)')
    p.add_argument("--keep", type=Path, help="keep the runs' folders (checkpoints, logs) here")
    p.add_argument("--sample_tokens", type=int, default=300, help="text to print from each final model (0: none)")
    args = p.parse_args()
    if args.nanogpt:
        args.nanogpt = args.nanogpt.resolve()
    for name, overrides in variants(args).items():
        print(f"{name.strip()}: {check_config(args.config, overrides)}")
    print(f"machine: {machine()}; python {platform.python_version()}")
    print(f"threads {args.threads}, runs {args.runs}, target val loss {args.target}")
    print(f"load average before: {os.getloadavg()}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="speedrun_")) if args.keep is None else args.keep.resolve()
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Run]] = {}
    try:
        write_nanogpt_data(work, TEXT.read_text(encoding="utf-8"))  # also the val split that quality() scores
        if args.nanogpt:
            shutil.copy(args.nanogpt / "configurator.py", work)  # train.py exec()s it from its working directory
        for r in range(args.runs):
            for name, (argv, cwd) in tools(args, work, r).items():
                run = run_timed(argv, cwd, args.threads)
                results.setdefault(name, []).append(run)
                hit = run.hit(args.target)
                reached = f"val <= {args.target} at step {hit[1]} after {hit[0]:.1f} s" if hit else "target not reached"
                print(
                    f"round {r + 1}/{args.runs} {name.strip()}: {run.seconds:.1f} s, {reached}, "
                    f"final {run.final_val:.4f}, load {os.getloadavg()[0]:.2f}",
                    flush=True,
                )
        print(f"load average after: {os.getloadavg()}\n")
        print("\n".join(table(results, args.target)))
        quality(args, work, args.runs - 1, list(results))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
