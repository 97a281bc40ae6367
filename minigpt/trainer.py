"""The training loop: optimizer, learning-rate schedule, steps, evaluation schedule, checkpoints.

Nothing here is GPT-specific beyond `model(x, y) -> (logits, loss)`; minigpt.run builds what it runs.
"""

from __future__ import annotations

import math
import signal
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from tqdm import tqdm

from minigpt import runtime
from minigpt.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, rng_state, save_checkpoint, set_rng_state
from minigpt.config import LogConfig, TrainConfig
from minigpt.errors import Fault, UserError
from minigpt.metrics import MetricsLogger


def get_lr(
    it: int,
    *,
    lr: float,
    min_lr: float,
    warmup_iters: int,
    decay_iters: int,
    schedule: str = "cosine",
    decay_frac: float = 0.2,
) -> float:
    """Learning rate at step `it`: linear warmup to lr, then down to min_lr at decay_iters, then flat.
    cosine: a half cosine from the end of warmup. wsd (warmup-stable-decay, modded-nanogpt's shape): lr held
    constant, then a linear decay over the last decay_frac of decay_iters; the long flat part keeps the
    step size large while the loss still falls fast, and the short tail anneals the noise away at the end."""
    if it < warmup_iters:
        return lr * (it + 1) / (warmup_iters + 1)
    if it >= decay_iters:
        return min_lr
    if schedule == "wsd":
        left = (decay_iters - it) / (decay_frac * decay_iters)  # > 1 before the tail starts
        return min_lr + min(1.0, left) * (lr - min_lr)
    progress = (it - warmup_iters) / max(1, decay_iters - warmup_iters)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)


def batch_size_at(it: int, *, batch_size: int, start: int, ramp_iters: int) -> int:
    """Sequences per micro-batch at step `it`: from start (0: no ramp) growing linearly to batch_size over
    ramp_iters steps. Early steps learn the easy statistics (letter frequencies), which a small batch
    estimates as well as a big one, at a fraction of the cost."""
    if not start or it >= ramp_iters:
        return batch_size
    return start + (batch_size - start) * it // ramp_iters


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The weights Muon updates: those of the linear layers inside the network (attention and MLP), not the
    output head (lm_head), whose rows are one per token like an embedding's."""
    return [
        m.weight
        for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.split(".")[-1] != "lm_head" and m.weight.requires_grad
    ]


def configure_optimizer(model: nn.Module, cfg: TrainConfig, device_type: str) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only: biases and norm gains have no scale worth
    regularising, and decay on the embeddings (wte, shared with the tied LM head, and wpe) would shrink
    the rows of rare tokens every step although their gradient comes seldom (minGPT's choice too).
    With cfg.optimizer='muon', the hidden matrices are Muon's (configure_muon) and left out here."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    muon = {id(p) for p in hidden_matrices(model)} if cfg.optimizer == "muon" else set()
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad and id(p) not in muon:
            (decay if p.dim() >= 2 and id(p) not in embeddings else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # with Muon and a tied LM head no matrix is left to decay: an empty group would break the checkpoints'
    # state dict of several optimizers
    groups = [g for g in groups if g["params"]]
    # the fused kernel updates all parameters in one pass, faster than foreach on the CPU too
    # (docs/benchmarks.md, "Options measured for the training step"); foreach is the portable fallback
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(
        groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=fused, foreach=None if fused else True
    )


def configure_muon(model: nn.Module, cfg: TrainConfig) -> torch.optim.Muon:
    """Muon (Jordan et al., 2024) for the hidden matrices: SGD momentum whose update is orthogonalised by a few
    Newton-Schulz steps (all its singular values pushed towards 1), so every direction of a weight matrix
    moves at a similar rate instead of the few that dominate the gradient. match_rms_adamw scales the update
    to the RMS of a typical AdamW step (Liu et al., 2025, "Muon is Scalable for LLM Training"), so lr and
    weight_decay tuned for AdamW are a sound start."""
    return Muon(
        hidden_matrices(model),
        lr=cfg.muon_lr or cfg.lr,
        weight_decay=cfg.weight_decay,
        momentum=cfg.muon_momentum,
        ns_steps=cfg.muon_ns_steps,
        adjust_lr_fn=cfg.muon_adjust_lr,
    )


class Muon(torch.optim.Muon):
    """PyTorch's torch.optim.Muon (its settings, checks and state), with the Newton-Schulz iteration in float32
    off CUDA. torch's runs it in bfloat16, which a CPU without bfloat16 units (AVX2) multiplies about 45x slower
    than float32: 3.6 s a step for the nano model's 16 matrices, far more than the rest of the step. On CUDA,
    torch's own step."""

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        if any(p.is_cuda for group in self.param_groups for p in group["params"]):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in (p for p in group["params"] if p.grad is not None):
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - momentum)  # an average of the gradients
                update = p.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = orthogonalize(update.float(), group["ns_coefficients"], group["ns_steps"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])  # decoupled weight decay, as AdamW's
                p.add_(update.to(p.dtype), alpha=-lr * muon_scale(p.shape, group["adjust_lr_fn"]))
        return loss


def orthogonalize(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """Newton-Schulz: about U V^T for g = U S V^T, without an SVD. Each step maps every singular value s of x to
    a s + b s^3 + c s^5, a polynomial that pushes values in (0, 1] towards 1 (to within about 0.7-1.2 with
    Muon's coefficients, which trade exactness for speed); dividing by the Frobenius norm first puts them in (0, 1]."""
    a, b, c = coefficients
    x = g.T if g.size(0) > g.size(1) else g  # the smaller Gram matrix: (rows, rows) with rows <= cols
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.size(0) > g.size(1) else x


def muon_scale(shape: torch.Size, adjust_lr_fn: str | None) -> float:
    """How much a (rows, cols) matrix's orthogonal update is scaled up: match_rms_adamw gives it the RMS of an
    AdamW step, 0.2 (Liu et al., 2025); original keeps Keller Jordan's sqrt(rows / cols) for tall matrices."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1.0, rows / cols))


class NonFiniteLossError(UserError, RuntimeError):
    """The loss or the weights became NaN or infinite: the run diverged."""


class RunFolderLost(Fault):
    """The run folder was deleted or moved while the run was training."""


class StopRequested:
    """Turns Ctrl-C / SIGTERM into a flag the loop checks between steps, so the run saves a
    consistent checkpoint (after a whole step) and exits cleanly. A second Ctrl-C quits at once."""

    def __enter__(self) -> StopRequested:
        self.signal_name: str | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal_name is not None:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class SlowStepWatch:
    """Notices steps far slower than the ones before: on a laptop that usually means another program
    holds a CPU core, and the fix is fewer threads. Warns at most once per `quiet` steps."""

    def __init__(
        self, factor: float = 3.0, window: int = 50, warmup: int = 10, quiet: int = 200, enabled: bool = True
    ) -> None:
        self.factor, self.warmup, self.quiet, self.enabled = factor, warmup, quiet, enabled
        self.recent: deque[float] = deque(maxlen=window)
        self.warned_at: int | None = None

    def add(self, seconds: float, step: int) -> str | None:
        """Record one step's time; return a warning when it took over `factor` x the median of the steps before."""
        if not self.enabled:
            return None
        median = statistics.median(self.recent) if len(self.recent) >= self.warmup else None
        self.recent.append(seconds)
        if median is None or seconds <= self.factor * median:
            return None
        if self.warned_at is not None and step - self.warned_at < self.quiet:
            return None
        self.warned_at = step
        return (
            f"warning: step {step} took {seconds:.2f} s, {seconds / median:.1f}x the median {median:.2f} s; "
            "is another program busy on the CPU? If steps stay slow, try --train.threads 1"
        )


class Trainer:
    """Owns the optimizers (AdamW, and Muon with cfg.optimizer='muon'), the step counter, the loop, the
    evaluation schedule, the run's limits (steps, seconds, a target loss) and the checkpoints.

    model: the plain model (evaluated and saved); train_model: what a step calls, the same model
    or a DDP/compiled wrapper of it. batches: gives (x, y) training batches with `next()` and has
    state_dict()/load_state_dict(). eval_sets: split name -> fixed batches for evaluation.
    run_dir: where checkpoints go (None: none are written); meta: saved with every checkpoint.
    on_eval(iter): called after each evaluation, e.g. to log attention maps and samples; the text it
    returns (if any) ends the evaluation's line.
    """

    def __init__(
        self,
        model: nn.Module,
        cfg: TrainConfig,
        batches: Any,
        *,
        train_model: nn.Module | None = None,
        device: torch.device = torch.device("cpu"),
        amp_dtype: torch.dtype | None = None,
        log: LogConfig = LogConfig(),
        eval_sets: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
        run_dir: Path | None = None,
        meta: dict[str, Any] | None = None,
        logger: MetricsLogger | None = None,
        out: TextIO = sys.stdout,
        on_eval: Callable[[int], str | None] | None = None,
        tokens_per_step: int = 0,
        flops_per_step: float = 0.0,
        peak_flops: float | None = None,
    ):
        self.model, self.cfg, self.batches, self.device, self.log, self.out = model, cfg, batches, device, log, out
        self.train_model = train_model if train_model is not None else model
        # grad_accum counts the micro-batches of all processes together; rank 0 alone writes and prints
        world_size, rank = (dist.get_world_size(), dist.get_rank()) if dist.is_initialized() else (1, 0)
        self.micro_steps, self.is_main = cfg.grad_accum // world_size, rank == 0
        self.optimizers: list[torch.optim.Optimizer] = [configure_optimizer(model, cfg, device.type)]
        if cfg.optimizer == "muon":
            self.optimizers.append(configure_muon(model, cfg))
        self.amp = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
        # fp16 needs loss scaling to keep small gradients from flushing to zero; bf16 does not
        self.scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
        self.eval_sets, self.run_dir, self.meta, self.on_eval = eval_sets or {}, run_dir, meta or {}, on_eval
        self.logger = logger or MetricsLogger()
        self.tokens_per_step, self.flops_per_step, self.peak_flops = tokens_per_step, flops_per_step, peak_flops
        self.iter, self.best_val_loss = 0, math.inf
        self.evaluated_at: int | None = None  # the step of the last evaluation, saved in checkpoints
        self.seconds = 0.0  # wall time spent in fit() over all sessions of the run, for train.max_seconds

    def step(self) -> dict[str, Any]:
        """One optimizer step over micro_steps micro-batches; returns loss, lr (floats) and
        grad_norm (a 0-d tensor: reading it forces a GPU sync, so callers do it only when logging)."""
        c = self.cfg
        decay_iters = c.lr_decay_iters or c.max_iters
        lr = get_lr(
            self.iter,
            lr=c.lr,
            min_lr=c.min_lr,
            warmup_iters=c.warmup_iters,
            decay_iters=decay_iters,
            schedule=c.lr_schedule,
            decay_frac=c.lr_decay_frac,
        )
        # one schedule for both optimizers: each group's rate is its own peak times the same multiplier
        for optimizer in self.optimizers:
            peak = (c.muon_lr or c.lr) if isinstance(optimizer, torch.optim.Muon) else c.lr
            for group in optimizer.param_groups:
                group["lr"] = lr * (peak / c.lr)
        ramp = {"start": c.batch_size_start, "ramp_iters": c.batch_ramp_iters}
        rows = batch_size_at(self.iter, batch_size=c.batch_size, **ramp)
        self.train_model.train()
        total = torch.zeros((), device=self.device)
        for micro in range(self.micro_steps):
            x, y = self.batches.next()
            # a smaller batch in the ramp: the first rows of the full one, so the sampler's state stays one count
            x, y = x[:rows], y[:rows]  # (rows, T) each
            with self._gradient_sync(micro == self.micro_steps - 1):
                with self.amp:
                    _, loss = self.train_model(x, y)
                self.scaler.scale(loss / self.micro_steps).backward()
            total += loss.detach()
        if dist.is_initialized():  # the same mean loss on every rank, so all stop together on NaN
            dist.all_reduce(total)
            total /= dist.get_world_size()
        loss_value = total.item() / self.micro_steps
        if not math.isfinite(loss_value):
            for optimizer in self.optimizers:
                optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLossError(f"loss became {loss_value} at iter {self.iter}; {self._diverged_advice()}")
        for optimizer in self.optimizers:
            self.scaler.unscale_(optimizer)
        # grad_clip=0: no clipping, but the norm is still measured for the logs
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip or math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded DTensor
            grad_norm = grad_norm.full_tensor()
        for optimizer in self.optimizers:
            self.scaler.step(optimizer)
        self.scaler.update()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        self.iter += 1
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm.detach(), "rows": rows}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss of the plain model on each fixed evaluation set, in eval mode (no dropout);
        the train split only with cfg.eval_train."""
        self.model.eval()
        losses = {}
        for split, batches in self.eval_sets.items():
            if split == "train" and not self.cfg.eval_train:
                continue
            with self.amp:
                total = sum(self.model(x.to(self.device), y.to(self.device))[1].float() for x, y in batches)
            losses[split] = total.item() / len(batches)
        self.model.train()
        return losses

    def fit(self, stop_at: int | None = None) -> dict[str, Any]:
        """Train until cfg.max_iters (or stop_at), evaluating and saving every eval_interval steps.

        Ends early, with a final evaluation and save as at max_iters, past cfg.max_seconds of training
        or at the first evaluation with val loss at or below cfg.stop_loss.
        Returns the last and best losses, the per-step training losses, the seconds, what stopped the run
        (stopped_by: a signal; None when it ran to the end) and which limit ended it early (limit:
        "max_seconds", "stop_loss" or None). A resumed run does not evaluate its first step again,
        so interrupted-and-resumed runs log exactly what uninterrupted runs log.
        """
        cfg = self.cfg
        end = min(cfg.max_iters, stop_at or cfg.max_iters)
        start, seconds_before = time.perf_counter(), self.seconds
        # a bar on a terminal; in a log file, the evaluation lines alone show the progress
        show = self.log.progress and self.is_main and self.out.isatty()
        bar = tqdm(
            total=cfg.max_iters, initial=self.iter, disable=not show, file=self.out, unit="step", dynamic_ncols=True
        )
        history: list[float] = []
        slow_steps = SlowStepWatch() if self.is_main else SlowStepWatch(enabled=False)
        losses, stopped_by, limit = {}, None, None
        with StopRequested() as stop, bar:
            while True:
                self.seconds = seconds_before + time.perf_counter() - start
                # every rank stops at the same step, whatever its own clock says
                if cfg.max_seconds and not runtime.all_ranks(self.seconds < cfg.max_seconds):
                    limit = "max_seconds"
                due = self.iter % cfg.eval_interval == 0 and self.iter >= cfg.eval_start
                if (due or self.iter >= cfg.max_iters or limit) and self.iter != self.evaluated_at:
                    losses = self._evaluate_and_save(bar, start)
                if cfg.stop_loss and self.best_val_loss <= cfg.stop_loss:  # also when resuming a finished run
                    limit = limit or "stop_loss"
                if self.iter >= end or stopped_by or limit:
                    break
                t0 = time.perf_counter()
                stats = self.step()
                dt = time.perf_counter() - t0
                history.append(stats["loss"])
                if warning := slow_steps.add(dt, self.iter):
                    bar.write(warning, file=self.out)
                self._report_step(stats, dt, bar)
                if not runtime.all_ranks(stop.signal_name is None):  # every rank stops at the same step
                    stopped_by = stop.signal_name or "a signal to another process"
            if self.iter != self.evaluated_at:  # stopped between evaluations: keep the state to resume from
                self._check_run_folder()
                self._check_finite({})
                self.save(CHECKPOINT_LATEST)
        if dist.is_initialized():  # the other ranks wait while rank 0 writes
            dist.barrier()
        return {
            "losses": losses,
            "history": history,
            "stopped_by": stopped_by,
            "limit": limit,
            "iter": self.iter,
            "best_val_loss": self.best_val_loss,
            "seconds": time.perf_counter() - start,
        }

    def _report_step(self, stats: dict[str, Any], dt: float, bar: tqdm) -> None:
        """Show the step just taken (dt seconds) on the bar, and log its scalars every log_interval steps."""
        share = stats["rows"] / self.cfg.batch_size  # below 1 during a batch-size ramp
        bar.update(1)
        bar.set_postfix(
            loss=f"{stats['loss']:.4f}",
            lr=f"{stats['lr']:.2e}",
            tok_s=f"{self.tokens_per_step * share / dt:,.0f}",
            refresh=False,
        )
        if self.iter % self.log.log_interval == 0:  # float(grad_norm) waits for the GPU
            scalars = {
                "loss/train": stats["loss"],
                "lr": stats["lr"],
                "grad_norm": float(stats["grad_norm"]),
                "perf/tokens_per_sec": self.tokens_per_step * share / dt,
                "perf/step_ms": 1000 * dt,
            }
            if self.peak_flops:
                scalars["perf/mfu"] = self.flops_per_step * share / dt / self.peak_flops
            self.logger.scalars(scalars, self.iter)

    def _diverged_advice(self) -> str:
        """The end of a divergence message: what was kept, and what to try."""
        kept = "no checkpoint was written yet"
        if self.run_dir is not None and (self.run_dir / CHECKPOINT_LATEST).exists():
            last = self.run_dir / CHECKPOINT_LATEST
            kept = f"the last good checkpoint {last} (iter {self.evaluated_at}) is untouched"
        return f"{kept}; try a lower train.lr, a train.grad_clip such as 1.0, or train.dtype=float32"

    def _check_finite(self, losses: dict[str, float]) -> None:
        """Refuse to save a diverged state: a non-finite evaluated loss or weight."""
        bad = [f"{split} loss {value}" for split, value in losses.items() if not math.isfinite(value)]
        with torch.no_grad():
            # under FSDP a parameter is a sharded DTensor: each rank checks its own shard
            local = [p.to_local() if hasattr(p, "to_local") else p for p in self.model.parameters()]
            finite = torch.stack([torch.isfinite(p).all() for p in local]).all()
        if not runtime.all_ranks(bool(finite)):
            bad.append("non-finite weights")
        if bad:
            raise NonFiniteLossError(
                f"the run diverged at iter {self.iter} ({', '.join(bad)}); {self._diverged_advice()}"
            )

    def _check_run_folder(self) -> None:
        """A run folder deleted or moved while training: save the state where it was, then stop, rather
        than carry on into a folder no lock holds (or lose the work)."""
        if self.run_dir is None or not self.is_main or self.run_dir.is_dir():
            return
        saved = "the state could not be saved"
        try:
            self.run_dir.mkdir(parents=True)
            save_checkpoint(self.run_dir / CHECKPOINT_LATEST, {**self.state_dict(), **self.meta})
            saved = f"saved the state at iter {self.iter} to {self.run_dir / CHECKPOINT_LATEST}"
        except (OSError, ValueError):
            pass
        raise RunFolderLost(
            f"the run folder {self.run_dir} was deleted or moved during training; {saved}; "
            f"continue it with --resume {self.run_dir}"
        )

    def _evaluate_and_save(self, bar: tqdm, start: float) -> dict[str, float]:
        """The checkpoint policy: latest after every evaluation, best when val loss improves; a diverged
        state (non-finite loss or weights) is never saved."""
        losses = self.evaluate()
        self._check_finite(losses)
        self._check_run_folder()  # before TensorBoard writes into it, or a save makes a new one
        self.evaluated_at = self.iter
        self.logger.scalars({f"loss/{k}_eval": v for k, v in losses.items()}, self.iter)
        note = self.on_eval(self.iter) if self.on_eval is not None else None
        self.logger.flush()
        best = losses.get("val", math.inf) < self.best_val_loss
        if best:
            self.best_val_loss = losses["val"]
        self.save(CHECKPOINT_LATEST, *([CHECKPOINT_BEST] if best else []))
        if self.is_main:
            shown = [f"{split} loss {losses[split]:.4f}" for split in ("train", "val") if split in losses]
            bar.write(
                f"iter {self.iter:>5}: {', '.join(shown)}  [{time.perf_counter() - start:.0f} s]"
                + ("  (best, saved)" if best else "")
                + (f"  {note}" if note else ""),
                file=self.out,
            )
        return losses

    def save(self, *names: str) -> None:
        """Write the state to each file name in run_dir, from rank 0. Every rank must call this
        (under FSDP gathering the state is a collective)."""
        state = self.state_dict()
        if self.is_main and self.run_dir is not None:
            for name in names:
                save_checkpoint(self.run_dir / name, {**state, **self.meta})

    def _gradient_sync(self, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-step (DDP and FSDP)."""
        if hasattr(self.train_model, "set_requires_gradient_sync"):  # FSDP2 module
            self.train_model.set_requires_gradient_sync(sync)
        elif hasattr(self.train_model, "no_sync") and not sync:  # DDP
            return self.train_model.no_sync()
        return nullcontext()

    def state_dict(self) -> dict[str, Any]:
        """Full (unsharded) state on CPU. Under FSDP every rank must call this (it gathers)."""
        # several optimizers give one state keyed by parameter name, so AdamW's and Muon's never collide
        model_state, optim_state = get_state_dict(
            self.model, self.optimizers, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
        )
        return {
            "model": model_state,
            "optimizer": optim_state,
            "scaler": self.scaler.state_dict(),
            "iter": self.iter,
            "evaluated_at": self.evaluated_at,
            "best_val_loss": self.best_val_loss,
            "seconds": self.seconds,
            "sampler": self.batches.state_dict(),
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_state_dict(
            self.model,
            self.optimizers,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=StateDictOptions(full_state_dict=True),
        )
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.iter, self.evaluated_at = state["iter"], state.get("evaluated_at")
        self.best_val_loss, self.seconds = state["best_val_loss"], state.get("seconds", 0.0)
        self.batches.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
