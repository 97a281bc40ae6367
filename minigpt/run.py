"""A training run end to end: configs, data, model, loop, logs, checkpoints (behind train.py).

    python train.py                                   # char-level tiny Shakespeare, sized for this machine
    python train.py configs/baby-gpt.toml --train.max_iters=500
    python train.py --resume                          # continue the newest run under runs/
    torchrun --nproc_per_node=2 train.py ...          # DistributedDataParallel
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from minigpt import runtime
from minigpt.config import LogConfig
from minigpt.checkpoint import (
    CHECKPOINT_BEST,
    CHECKPOINT_LATEST,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from minigpt.config import (
    ConfigError,
    configs_to_dict,
    format_help,
    load_config,
    read_config_file,
    save_config,
    split_argv,
)
from minigpt.data import BatchSampler, DataConfig, DataError, eval_batches, prepare
from minigpt.generate import generate_ids
from minigpt.metrics import MetricsLogger, Progress, TensorBoardLogger
from minigpt.model import GPT, ModelConfig
from minigpt.params import count_params, flops_per_token, format_param_table
from minigpt.tokenizer import TokenizerError, default_prompt
from minigpt.trainer import NonFiniteLossError, Trainer, TrainConfig


SECTIONS: dict[str, type] = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "log": LogConfig}

# The default run, by device. The CPU default is tuned to reach a low validation loss on
# tiny Shakespeare within a few minutes on 2 cores (see docs/benchmarks.md); on a GPU it is
# nanoGPT's "baby GPT" shakespeare_char shape.
DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0},
        "train": {"batch_size": 32, "max_iters": 2500, "lr": 3e-3, "min_lr": 3e-4, "warmup_iters": 50,
                  "eval_interval": 250, "eval_iters": 20},
    },
    "gpu": {
        "model": {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.2},
        "train": {"batch_size": 64, "max_iters": 5000, "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100,
                  "eval_interval": 250, "eval_iters": 200},
    },
}  # fmt: skip



class _StopRequested:
    """Turns Ctrl-C / SIGTERM into a flag the loop checks between steps, so the run saves
    a consistent checkpoint (after a whole step) and exits cleanly."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequested:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def find_resume_checkpoint(target: str | None, out_dir: str) -> Path:
    """--resume [RUN_DIR | CHECKPOINT]: the file to continue from (newest run if none named)."""
    if target:
        path = Path(target)
        if path.is_dir():
            path = path / CHECKPOINT_LATEST
        if not path.exists():
            raise CheckpointError(f"nothing to resume at {path}; name a run folder that holds {CHECKPOINT_LATEST}")
        return path
    runs = sorted(Path(out_dir).glob(f"*/{CHECKPOINT_LATEST}"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise CheckpointError(f"no run to resume under {out_dir}/; start one with `python train.py`")
    return runs[-1]


def resolve_configs(argv: list[str]) -> tuple[dict[str, Any], Path | None, list[str]]:
    """Configs from defaults < device defaults (or checkpoint) < file < command line."""
    path, overrides, rest = split_argv(argv)
    resume_from: Path | None = None
    if rest and rest[0] == "--resume":
        target = rest[1] if len(rest) > 1 and not rest[1].startswith("-") else None
        rest = rest[2:] if target else rest[1:]
        resume_from = find_resume_checkpoint(target, _peek_train(path, overrides, "out_dir"))
    elif any(a.startswith("--resume=") for a in rest):
        raise ConfigError("write --resume RUN_DIR (with a space), or --resume alone for the newest run")
    if rest:
        raise ConfigError(
            f"unknown argument {rest[0]!r}; settings look like --train.max_iters=100 (see --help), "
            "plus an optional CONFIG.toml and --resume [RUN_DIR]"
        )
    if resume_from is not None:
        ckpt_config = load_checkpoint(resume_from)["config"]
        configs = load_config(SECTIONS, path, overrides, base=ckpt_config)
        saved = load_config(SECTIONS, base=ckpt_config)
        for section in ("model", "data"):
            if configs[section] != saved[section]:
                new, old = configs_to_dict({section: configs[section]})[section], ckpt_config[section]
                key = next(k for k in new if new[k] != old.get(k))
                raise CheckpointError(
                    f"cannot resume {resume_from}: {section}.{key} is {old.get(key)!r} in the checkpoint "
                    f"but {new[key]!r} now; drop the override or start a new run"
                )
        return configs, resume_from, rest
    if path is not None:  # a config file is the whole recipe; the device defaults do not apply
        return load_config(SECTIONS, path, overrides), None, rest
    device = runtime.resolve_device(_peek_train(None, overrides, "device"))
    base = DEFAULTS["cpu" if device.type == "cpu" else "gpu"]
    return load_config(SECTIONS, None, overrides, base=base), None, rest


def _peek_train(path: str | None, overrides: list[str], key: str) -> Any:
    """One [train] setting from the file and command line, before the full configs can be
    validated (they depend on it: the device picks the default run, out_dir finds the run)."""
    mine = [o for o in overrides if o.split("=", 1)[0] == f"--train.{key}"]
    if path is not None:
        value = read_config_file(path).get("train", {}).get(key)
        if value is not None and not mine:
            mine = [f"--train.{key}={value}"]
    return getattr(load_config({"train": TrainConfig}, None, mine)["train"], key)


def default_run_name(data_cfg: DataConfig) -> str:
    if data_cfg.hf_dataset:
        corpus = data_cfg.hf_dataset.split("/")[-1]
    else:
        p = Path(data_cfg.path)
        corpus = p.parent.name if p.stem in ("input", "train", "data") and p.parent.name else p.stem
    return f"{corpus}-{data_cfg.tokenizer}-{datetime.now():%Y%m%d-%H%M%S}"


class Run:
    """Everything one training run holds; `fit()` runs it to the end or until stopped."""

    def __init__(self, configs: dict[str, Any], resume_from: Path | None = None, *, out=sys.stdout):
        self.out = out
        self.rt = runtime.setup(configs["train"].device, configs["train"].dtype)
        train_cfg: TrainConfig = configs["train"]
        self.log_cfg: LogConfig = configs["log"]
        if train_cfg.threads:
            torch.set_num_threads(train_cfg.threads)
        torch.manual_seed(train_cfg.seed)

        # data: rank 0 prepares (or reuses) the token files, the others wait and then read them
        error = None
        if self.rt.is_main:
            try:
                self.data = prepare(configs["data"], progress=True)
            except DataError as e:
                error = e
        if not runtime.all_ranks(error is None):  # a failure on rank 0 stops every rank
            raise error or DataError("rank 0 could not prepare the data; see its error message")
        if not self.rt.is_main:
            self.data = prepare(configs["data"], progress=False)
        self.tokenizer = self.data.tokenizer
        model_cfg: ModelConfig = replace(configs["model"], vocab_size=self.tokenizer.vocab_size)
        self.configs = {**configs, "model": model_cfg}

        if train_cfg.grad_accum % self.rt.world_size:
            raise ConfigError(
                f"train.grad_accum={train_cfg.grad_accum} must be a multiple of the {self.rt.world_size} "
                "processes (each process does grad_accum / world_size micro-steps)"
            )
        micro_steps = train_cfg.grad_accum // self.rt.world_size
        device = self.rt.device
        self.model = GPT(model_cfg).to(device)
        train_model = self.model
        if self.rt.distributed and train_cfg.parallel == "fsdp":
            from torch.distributed.fsdp import fully_shard

            # shard each block's weights across ranks (gathered just in time for its forward
            # and backward), then the rest (embeddings, final norm) as the root unit
            for block in self.model.h:
                fully_shard(block)
            fully_shard(self.model)
        if train_cfg.compile:
            train_model = torch.compile(train_model)
        if self.rt.distributed and train_cfg.parallel == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            train_model = DistributedDataParallel(
                train_model, device_ids=[device.index] if device.type == "cuda" else None
            )
        train_tokens = self.data.load_split("train")
        val_tokens = self.data.load_split("val")
        bs, T = train_cfg.batch_size, model_cfg.block_size
        sampler = BatchSampler(
            train_tokens, bs, T, seed=train_cfg.seed, rank=self.rt.rank, world_size=self.rt.world_size,
            micro_steps=micro_steps, device=device,
        )
        self.eval_sets = {
            "train": eval_batches(train_tokens, train_cfg.eval_iters, bs, T),
            "val": eval_batches(val_tokens, train_cfg.eval_iters, bs, T),
        }
        self.trainer = Trainer(
            self.model, train_cfg, sampler, train_model=train_model, device=device,
            amp_dtype=self.rt.amp_dtype, micro_steps=micro_steps,
        )  # fmt: skip

        self.tokens_per_step = bs * T * train_cfg.grad_accum
        self.flops_per_step = flops_per_token(model_cfg)["total"] * self.tokens_per_step
        # measured before a resume restores the RNG states (the benchmark draws random numbers)
        self.peak_flops = (
            runtime.measure_peak_flops(device, self.rt.amp_dtype or torch.float32)
            if device.type == "cuda" and self.rt.is_main else None
        )  # fmt: skip
        if resume_from is not None:
            ckpt = load_checkpoint(resume_from, map_location="cpu")  # RNG states must stay on the CPU
            if ckpt["tokenizer"] != self.tokenizer.to_dict():
                raise CheckpointError(
                    f"cannot resume {resume_from}: the corpus now gives a different {self.tokenizer.kind} "
                    "vocabulary than the checkpoint was trained with; restore the corpus or start a new run"
                )
            self.trainer.load_state_dict(ckpt)
            self.run_dir = resume_from.parent
        else:
            self.run_dir = Path(train_cfg.out_dir) / (train_cfg.run_name or default_run_name(configs["data"]))
            if (self.run_dir / CHECKPOINT_LATEST).exists():
                raise CheckpointError(
                    f"{self.run_dir} already holds a run; continue it with --resume {self.run_dir} "
                    "or pick another --train.run_name"
                )
        self.resumed = resume_from is not None
        self.probe = self._probe(min(self.log_cfg.probe_tokens, T))
        self.logger: MetricsLogger = MetricsLogger()
        if self.rt.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.configs, self.run_dir / "config.toml")
            if self.log_cfg.tensorboard:
                self.logger = TensorBoardLogger(self.run_dir, purge_step=self.trainer.iter if self.resumed else None)

    def _newline(self) -> list[int]:
        """The newline's ids, or [] when a char vocabulary has no newline."""
        try:
            return self.tokenizer.encode("\n")
        except ValueError:
            return []

    def _probe(self, n: int):
        """A fixed probe text for attention maps: n val tokens, from the first line start
        among the first 256 (the start of the split when there is none)."""
        head = self.data.probe_tokens(n + 256)
        newline = self._newline()
        starts = [i + 1 for i in range(len(head) - n) if newline and head[i : i + 1].tolist() == newline]
        start = starts[0] if starts else 0
        return head[start : start + n]

    # -- console ---------------------------------------------------------------------------

    def print(self, *lines: str) -> None:
        if self.rt.is_main:
            print(*lines, sep="\n", file=self.out, flush=True)

    def header(self) -> str:
        cfg, rt = self.configs["train"], self.rt
        meta = self.data.meta
        total = count_params(self.configs["model"])["total"]
        lines = [
            f"minigpt: training a {total / 1e6:.2f}M-parameter GPT. Where the parameters are:",
            "",
            format_param_table(self.configs["model"], cfg.batch_size),
            "",
            f"data:      {self.data.dir}  ({self.tokenizer.kind} tokenizer, vocab {self.tokenizer.vocab_size}, "
            f"{meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens)",
            f"device:    {rt.device}" + (f" x {rt.world_size} processes" if rt.distributed else "")
            + f", dtype {rt.dtype_name}" + (", torch.compile" if cfg.compile else ""),
            f"batch:     {cfg.batch_size} x {self.configs['model'].block_size} tokens x {cfg.grad_accum} "
            f"accumulation = {self.tokens_per_step:,} tokens per step",
            f"run:       {self.run_dir}" + (f"  (resumed at iter {self.trainer.iter})" if self.resumed else ""),
        ]
        return "\n".join(lines)

    # -- evaluation ------------------------------------------------------------------------

    def sample_text(self, n_tokens: int, seed: int = 0) -> str:
        _, prompt = default_prompt(self.tokenizer)
        gen = torch.Generator(device=self.rt.device).manual_seed(seed)
        ids = generate_ids(self.model, prompt, n_tokens, temperature=0.8, top_k=None, generator=gen)
        return self.tokenizer.decode(ids[0, len(prompt):].tolist())

    def evaluate(self) -> dict[str, float]:
        """Train/val loss on the fixed batches, plus attention maps and a sample.

        Every rank runs it (under FSDP each forward gathers weights from all ranks); only
        rank 0 has a real logger.
        """
        it = self.trainer.iter
        losses = {split: self.trainer.evaluate(batches) for split, batches in self.eval_sets.items()}
        self.logger.scalars({f"loss/{k}_eval": v for k, v in losses.items()}, it)
        if self.log_cfg.attention_maps:
            weights = self.model.attention_maps(self.probe)  # (n_layer, nh, T, T)
            tokens = [self.tokenizer.decode_token(int(t)) for t in self.probe]
            self.logger.attention(weights, tokens, it)
        if self.log_cfg.sample_tokens:
            self.logger.text("sample", self.sample_text(self.log_cfg.sample_tokens), it)
        self.logger.flush()
        return losses

    def save(self, *names: str) -> None:
        """Write one checkpoint to each file name, from rank 0; every rank must call this
        (under FSDP gathering the state is a collective)."""
        state = self.trainer.state_dict()
        if self.rt.is_main:
            ckpt = {**state, "config": configs_to_dict(self.configs), "tokenizer": self.tokenizer.to_dict()}
            for name in names:
                save_checkpoint(self.run_dir / name, ckpt)

    # -- the loop --------------------------------------------------------------------------

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until train.max_iters (or `stop_at`), evaluating and saving along the way."""
        cfg = self.configs["train"]
        trainer = self.trainer
        end = min(cfg.max_iters, stop_at) if stop_at is not None else cfg.max_iters
        self._fit_start = time.perf_counter()
        progress = Progress(
            cfg.max_iters, initial=trainer.iter, enabled=self.rt.is_main and self.log_cfg.progress, stream=self.out
        )
        if self.rt.is_main and not self.resumed:
            self.logger.text("params", format_param_table(self.configs["model"], cfg.batch_size), 0)
            from minigpt.config import to_toml

            self.logger.text("config", to_toml(self.configs), 0)
        history: list[float] = []
        losses: dict[str, float] = {}
        stopped_by = None
        # a resumed run was evaluated and saved at its starting iteration already
        skip_eval_at = trainer.iter if self.resumed else None
        with _StopRequested() as stop, progress:
            t_last = time.perf_counter()
            while trainer.iter < end:
                if trainer.iter % cfg.eval_interval == 0 and trainer.iter != skip_eval_at:
                    losses = self._eval_and_save(progress)
                    t_last = time.perf_counter()  # step timing leaves the evaluation out
                stats = trainer.step()
                history.append(stats["loss"])
                now = time.perf_counter()
                dt, t_last = now - t_last, now
                tok_s = self.tokens_per_step / dt
                progress.update(trainer.iter, loss=stats["loss"], lr=stats["lr"], tok_s=tok_s)
                if trainer.iter % self.log_cfg.log_interval == 0:
                    scalars = {
                        "loss/train": stats["loss"], "lr": stats["lr"], "grad_norm": float(stats["grad_norm"]),
                        "perf/tokens_per_sec": tok_s, "perf/step_ms": 1000 * dt,
                    }  # fmt: skip
                    if self.peak_flops:
                        # flops_per_step counts every process's tokens, so compare with all GPUs' peak
                        scalars["perf/mfu"] = self.flops_per_step / dt / (self.peak_flops * self.rt.world_size)
                    self.logger.scalars(scalars, trainer.iter)
                # all ranks stop at the same step, even if only some of them got the signal
                if not runtime.all_ranks(stop.signal_name is None):
                    stopped_by = stop.signal_name or "a signal to another process"
                    break
            # the final evaluation, or the one an uninterrupted run would do at this step
            # (a resumed run skips its first one, so the two runs log the same evaluations)
            if trainer.iter >= cfg.max_iters or trainer.iter % cfg.eval_interval == 0:
                losses = self._eval_and_save(progress)
            else:  # stopped early: keep the state to resume from
                self.save(CHECKPOINT_LATEST)
        runtime.barrier()
        return {"losses": losses, "history": history, "stopped_by": stopped_by, "iter": trainer.iter}

    def _eval_and_save(self, progress: Progress) -> dict[str, float]:
        trainer = self.trainer
        losses = self.evaluate()
        best = losses["val"] < trainer.best_val_loss
        if best:
            trainer.best_val_loss = losses["val"]
        self.save(CHECKPOINT_LATEST, *([CHECKPOINT_BEST] if best else []))
        elapsed = time.perf_counter() - self._fit_start
        progress.write(
            f"iter {trainer.iter:>5}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
            f"  [{elapsed:.0f} s]" + ("  (best, saved)" if best else "")
        )
        return losses


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(format_help(SECTIONS, prog="python train.py") + _EXTRA_HELP)
        return 0
    run = None
    try:
        configs, resume_from, _ = resolve_configs(argv)
        run = Run(configs, resume_from)
        run.print(run.header(), "")
        t0 = time.perf_counter()
        result = run.fit()
        elapsed = time.perf_counter() - t0
        # every rank samples (in lockstep under FSDP); rank 0 prints
        wants_sample = not result["stopped_by"] and run.log_cfg.sample_tokens > 0
        sample = run.sample_text(run.log_cfg.sample_tokens, seed=1) if wants_sample else ""
        if run.rt.is_main:
            _report(run, result, elapsed, sample)
        return 0
    except (ConfigError, DataError, CheckpointError, TokenizerError, NonFiniteLossError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        if run is not None:
            run.logger.close()
        runtime.teardown()


def _report(run: Run, result: dict[str, Any], elapsed: float, sample: str) -> None:
    losses = result["losses"]
    if result["stopped_by"]:
        run.print(
            "",
            f"stopped by {result['stopped_by']} at iter {result['iter']}; checkpoint saved to "
            f"{run.run_dir / CHECKPOINT_LATEST}",
            f"continue with: python train.py --resume {run.run_dir}",
        )
        return
    final = {"val_loss": losses.get("val", math.nan), "train_loss": losses.get("train", math.nan)}
    run.logger.hparams(configs_to_dict(run.configs), final, result["iter"])
    run.print(
        "",
        f"done: {result['iter']} iters in {elapsed:.0f} s; val loss {final['val_loss']:.4f} "
        f"(best {run.trainer.best_val_loss:.4f})",
        *(["", "sample:", sample.strip("\n")] if sample else []),
        "",
        f"checkpoints: {run.run_dir / CHECKPOINT_BEST}, {run.run_dir / CHECKPOINT_LATEST}",
        f"TensorBoard: tensorboard --logdir {run.run_dir.parent}",
        f"sample more: python sample.py --run {run.run_dir}",
    )


_EXTRA_HELP = """
other arguments:
  --resume [RUN_DIR | CHECKPOINT]
      Continue a run where it stopped (default: the newest run under train.out_dir).
      Settings given on the command line override the saved ones, except model and data.
  torchrun --nproc_per_node=N train.py ...
      Train with DistributedDataParallel on N processes (see README).
"""
