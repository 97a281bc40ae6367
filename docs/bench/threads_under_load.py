"""Milliseconds per training step of whole `train.py` processes, by thread setting, on an idle CPU and
with one core held by another program (a busy loop), as on a laptop with a browser open.

    python docs/bench/threads_under_load.py [--steps 150] [--rounds 2] [--configs default fast]

Variants (each a fresh `python train.py` process, alternating within a round):
  1 thread        --train.threads 1
  2 threads spin  torch's default threads with OpenMP's default waiting (what train.py did before the
                  issue "The newcomer's path on a real laptop"): OMP_WAIT_POLICY is given an empty value,
                  which libgomp ignores (it warns once), so train.py's own default does not apply
  new default     plain `python train.py`: its thread settings as shipped (minigpt.commands.prepare_threads_env)
Each process trains --steps steps with TensorBoard on and `log.log_interval 1`; the figure is the median of
`perf/step_ms` over the steps after the first 20 (read back from the event file), so start-up, data
preparation and evaluations are left out. The busy loop is `python -c "while True: pass"`.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"default": [], "fast": ["configs/shakespeare-char-fast.toml"]}
VARIANTS = {"1 thread": ({}, ["--train.threads=1"]), "2 threads spin": ({"OMP_WAIT_POLICY": ""}, []), "new default": ({}, [])}
CANDIDATES = {  # waiting policies tried before choosing the default (--variants to run them)
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "spin 1k": ({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000"}, []),
    "spin 10k": ({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"}, []),
    "spin 30k": ({"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "30000"}, []),
}


def step_ms(run_dir: Path, skip: int = 20) -> float:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    values = [e.value for e in events.Scalars("perf/step_ms") if e.step > skip]
    return statistics.median(values)


def one_run(config: list[str], variant: str, steps: int, out: Path, name: str) -> float:
    env_extra, flags = {**VARIANTS, **CANDIDATES}[variant]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(env_extra)
    args = [sys.executable, "train.py", *config, f"--train.max_iters={steps}", f"--train.eval_interval={steps}",
            "--train.eval_iters=1", "--log.log_interval=1", "--log.sample_tokens=0", "--log.no_attention_maps",
            "--log.no_head_roles", "--log.no_progress", f"--train.out_dir={out}", f"--train.run_name={name}", *flags]
    subprocess.run(args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return step_ms(out / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--loads", nargs="+", default=["idle", "one core busy"], choices=["idle", "one core busy"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=[*VARIANTS, *CANDIDATES])
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load before: {os.getloadavg()}")
    results: dict[tuple[str, str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for load in args.loads:
            busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if load != "idle" else None
            try:
                for r in range(args.rounds):
                    for config in args.configs:
                        for variant in args.variants:
                            name = f"{config}-{variant.replace(' ', '_')}-{load.replace(' ', '_')}-{r}"
                            ms = one_run(CONFIGS[config], variant, args.steps, Path(tmp), name)
                            results.setdefault((config, load, variant), []).append(ms)
                            print(f"{config:8} {load:14} {variant:15} {ms:8.1f} ms/step   (load average after: "
                                  f"{os.getloadavg()[0]:.2f})", flush=True)
            finally:
                if busy is not None:
                    busy.kill()
    print("\n| run | load | " + " | ".join(args.variants) + " |")
    print("|---|---|" + "---|" * len(args.variants))
    for config in args.configs:
        for load in args.loads:
            cells = [" / ".join(f"{ms:.0f}" for ms in results[(config, load, v)]) for v in args.variants]
            print(f"| {config} | {load} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
