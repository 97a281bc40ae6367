"""nanoGPT's sample.py against minigpt's sample.py, same weights, timed as whole processes on the CPU.

    python docs/bench/nanogpt_side_by_side.py --nanogpt /tmp/nanogpt [--tokens 500] [--runs 3] [--threads 1]
                                              [--dtypes float32 float16]

--nanogpt is a folder holding nanoGPT's model.py, sample.py and configurator.py (e.g. extracted with
`git show HEAD:model.py`); nothing of nanoGPT lives in this repo. The script builds the baby-GPT shape
(6 layers, 6 heads, 384 wide, block 256, char vocab 65, bias, 10.77M params) with seeded random weights
(speed does not depend on them) and writes them twice into a temp folder: as a minigpt checkpoint
(minigpt.checkpoint.save_checkpoint) and as a nanoGPT out_dir/ckpt.pt with data/shakespeare_char/meta.pkl,
so nanoGPT's sample.py uses the char vocabulary and never asks for the GPT-2 tokenizer. It checks that
nanoGPT's GPT loads the weights strictly and gives minigpt's logits (within 1e-4).

Then, for N in (1, --tokens), each round runs every tool once as a fresh process (alternating), with
OMP_NUM_THREADS=MKL_NUM_THREADS=--threads: nanoGPT's sample.py (float32, no compile; it has no KV cache)
and minigpt's sample.py once per --dtypes entry. Reported per tool: median seconds of the process for 1 token
(start-up: imports, loading, the first token) and for N tokens, and tokens/s = (N - 1) / (t_N - t_1),
which leaves start-up out; the ratio is that rate against nanoGPT's; and the largest peak resident memory
of its processes (ru_maxrss).
"""

import argparse
import importlib.util
import os
import pickle
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from minigpt import cli
from minigpt.checkpoint import save_checkpoint
from minigpt.config import ModelConfig, RunConfig
from minigpt.model import GPT
from minigpt.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[2]


def write_checkpoints(work: Path, seed: int = 0) -> GPT:
    """The baby-GPT with seeded random weights, saved for minigpt (work/minigpt/) and nanoGPT (work/out/)."""
    torch.manual_seed(seed)
    cfg = ModelConfig.from_preset("baby-gpt", vocab_size=65, dropout=0.0)
    model = GPT(cfg).eval()
    tok = CharTokenizer.from_text((ROOT / "data/shakespeare/input.txt").read_text(encoding="utf-8"))
    assert tok.vocab_size == cfg.vocab_size, tok.vocab_size
    save_checkpoint(work / "minigpt/ckpt_best.pt", {
        "model": model.state_dict(), "config": cli.to_dict(RunConfig(model=cfg)), "tokenizer": tok.to_dict(),
        "iter": 0, "best_val_loss": float("inf")})  # fmt: skip
    # nanoGPT nests everything but the head under transformer.
    state = {k if k.startswith("lm_head.") else f"transformer.{k}": v for k, v in model.state_dict().items()}
    model_args = dict(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=cfg.block_size,
                      bias=cfg.bias, vocab_size=cfg.vocab_size, dropout=cfg.dropout)
    (work / "out").mkdir()
    torch.save({"model_args": model_args, "model": state, "config": {"dataset": "shakespeare_char"},
                "iter_num": 0, "best_val_loss": 0.0}, work / "out/ckpt.pt")
    (work / "data/shakespeare_char").mkdir(parents=True)
    stoi = {c: i for i, c in enumerate(tok.chars)}
    meta = {"vocab_size": tok.vocab_size, "itos": dict(enumerate(tok.chars)), "stoi": stoi}
    with open(work / "data/shakespeare_char/meta.pkl", "wb") as f:
        pickle.dump(meta, f)
    return model


def check_same_logits(nanogpt: Path, work: Path, model: GPT) -> None:
    """nanoGPT's GPT, loaded as its sample.py loads it (strict), gives minigpt's logits."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", nanogpt / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ckpt = torch.load(work / "out/ckpt.pt", map_location="cpu", weights_only=True)  # as nanoGPT's sample.py on torch 2.6+
    theirs = mod.GPT(mod.GPTConfig(**ckpt["model_args"]))
    theirs.load_state_dict(ckpt["model"])  # strict, as in sample.py
    theirs.eval()
    ids = torch.randint(0, 65, (2, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, _ = model(ids)
        logits, _ = theirs(ids, targets=ids)  # with targets nanoGPT returns every position's logits
    diff = (ours - logits).abs().max().item()
    print(f"logits check: {tuple(ids.shape)} ids, max |minigpt - nanoGPT| = {diff:.2e} "
          f"({'OK' if diff < 1e-4 else 'MISMATCH'}, tolerance 1e-4); minigpt params {model.num_params():,}")
    if diff >= 1e-4:
        sys.exit("the two models disagree; timings would compare different computations")


def commands(nanogpt: Path, work: Path, n: int, threads: int, dtypes: list[str]) -> dict[str, tuple[list[str], Path]]:
    """Tool name -> (argv, working directory) generating n tokens from a newline."""
    tools = {"nanoGPT sample.py (float32)": ([
        sys.executable, str(nanogpt / "sample.py"), "--init_from=resume", f"--out_dir={work / 'out'}", "--device=cpu",
        "--compile=False", "--dtype=float32", "--num_samples=1", f"--max_new_tokens={n}", "--start=\n"], work)}  # fmt: skip
    for d in dtypes:
        tools[f"minigpt sample.py ({d})"] = ([
            sys.executable, str(ROOT / "sample.py"), "--ckpt", str(work / "minigpt/ckpt_best.pt"),
            "--max_new_tokens", str(n), "--threads", str(threads), "--seed", "1", "--dtype", d], ROOT)  # fmt: skip
    return tools


def run_once(argv: list[str], cwd: Path, threads: int) -> tuple[float, int]:
    """Wall seconds and peak resident bytes (ru_maxrss, from wait4) of one process."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            out.seek(0)
            sys.exit(f"failed ({proc.returncode}): {' '.join(map(repr, argv))}\n{out.read()[-4000:].decode()}")
    return seconds, usage.ru_maxrss * 1024


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout if shutil.which("lscpu") else ""
    model = next((ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if ln.startswith("Model name")), "")
    return f"{model or platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nanogpt", type=Path, required=True, help="has nanoGPT's model.py, sample.py, configurator.py")
    p.add_argument("--tokens", type=int, default=500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    args = p.parse_args()
    nanogpt = args.nanogpt.resolve()
    assert args.tokens > 1, "--tokens must be at least 2"
    print(f"machine: {machine()}; torch {torch.__version__}; python {platform.python_version()}")
    print(f"threads {args.threads}, runs {args.runs}, tokens 1 and {args.tokens}")
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="nanogpt_side_by_side_") as tmp:
        work = Path(tmp)
        shutil.copy(nanogpt / "configurator.py", work)  # sample.py exec()s it from the working directory
        model = write_checkpoints(work)
        check_same_logits(nanogpt, work, model)
        times: dict[str, dict[int, list[float]]] = {}
        peaks: dict[str, list[int]] = {}
        for r in range(args.runs):
            for n in (1, args.tokens):
                for name, (argv, cwd) in commands(nanogpt, work, n, args.threads, args.dtypes).items():
                    seconds, peak = run_once(argv, cwd, args.threads)
                    times.setdefault(name, {1: [], args.tokens: []})[n].append(seconds)
                    peaks.setdefault(name, []).append(peak)
            print(f"round {r + 1}/{args.runs} done")
    print(f"load average after: {os.getloadavg()}\n")
    n = args.tokens
    print(f"| tool | 1 token (s) | {n} tokens (s) | tokens/s (start-up excluded) | vs nanoGPT | peak RSS |")
    print("|---|---:|---:|---:|---:|---:|")
    base = None
    for name, t in times.items():
        t1, tn = statistics.median(t[1]), statistics.median(t[n])
        rate = (n - 1) / (tn - t1) if tn > t1 else float("inf")
        base = base or rate
        print(f"| {name} | {t1:.2f} | {tn:.2f} | {rate:.1f} | {rate / base:.2f}x | {max(peaks[name]) / 2**20:.0f} MiB |")


if __name__ == "__main__":
    main()
