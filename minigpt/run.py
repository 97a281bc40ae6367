"""A training run end to end, behind train.py: settings, data, model, loggers, then the Trainer.

Each step is a small function that returns plain values; `train` wires them together and `main`
turns every expected failure into one line on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from minigpt import cli, entry, hf, runtime, shipped
from minigpt.checkpoint import (
    CHECKPOINT_BEST,
    CHECKPOINT_LATEST,
    CheckpointError,
    CheckpointWriteError,
    load_checkpoint,
    newest_run,
    remove_stale_temp_files,
    write_failure,
)
from minigpt.config import DataConfig, LogConfig, ModelConfig, RunConfig
from minigpt.data import BatchSampler, DataError, PreparedData, eval_batches, prepare
from minigpt.generate import generate_ids
from minigpt.metrics import MetricsLogger, TensorBoardLogger
from minigpt.model import GPT
from minigpt.params import count_params, flops_per_token, format_param_table
from minigpt.roles import RoleProbes, copy_losses, format_roles, head_roles, role_probes, strongest_heads
from minigpt.tokenizer import Tokenizer, default_prompt
from minigpt.trainer import RunFolderLost, Trainer

# the repository's configs/, or their copies inside an installed package (minigpt/shipped.py)
DEFAULT_RUNS = {"cpu": shipped.path("configs/shakespeare-char-cpu.toml"), "gpu": shipped.path("configs/baby-gpt.toml")}
"""The run `python train.py` does without a config file, by the hardware it finds."""

USAGE_EXTRA = """
  --resume [RUN_DIR | CHECKPOINT]   continue a run where it stopped (default: the newest under train.out_dir);
                                    flags override its saved settings, except model and data
  without CONFIG.toml, the defaults are configs/shakespeare-char-cpu.toml (no GPU) or configs/baby-gpt.toml
"""


def split_resume(argv: list[str]) -> tuple[list[str], str | None, bool]:
    """Take `--resume [TARGET]` out of argv: (the rest, TARGET or None, whether --resume was given).
    Done by hand, here only: tyro has no flag whose value may be left out, and RunConfig has no field for it
    (it is how a run starts, not a setting saved with it)."""
    if "--resume" not in argv:
        if any(a.startswith("--resume=") for a in argv):
            raise cli.ConfigError("write --resume RUN_DIR (with a space), or --resume alone for the newest run")
        return argv, None, False
    i = argv.index("--resume")
    target = argv[i + 1] if i + 1 < len(argv) and not argv[i + 1].startswith("-") else None
    return argv[:i] + argv[i + 1 + (target is not None) :], target, True


def from_argv(argv: list[str]) -> tuple[RunConfig, dict[str, Any] | None, Path | None]:
    """The settings of `python train.py ARGV`, before `finalize`: defaults < the default run (or the checkpoint
    resumed) < CONFIG file < flags, with argv parsed once. When resuming, also the checkpoint (loaded once: a
    file, a run folder's latest, or the newest run's latest) and its path; else None, None."""
    argv, target, resuming = split_resume(argv)
    args = cli.parse_args(RunConfig, argv, prog="python train.py", default_file=DEFAULT_RUNS["cpu"])
    cfg = args.config
    if args.file is None and runtime.resolve_device(cfg.train.device).type != "cpu":
        cfg = args.over(cli.read_file(DEFAULT_RUNS["gpu"]), str(DEFAULT_RUNS["gpu"]))
    if not resuming:
        return cfg, None, None
    path = checkpoint_to_resume(target, Path(cfg.train.out_dir))
    ckpt = load_checkpoint(path, resume=True)  # its weights and training state fit its config
    cfg = args.over(ckpt["config"], str(path))
    saved = cli.from_dict(RunConfig, ckpt["config"])
    for section in ("model", "data"):
        new, old = dataclasses.asdict(getattr(cfg, section)), dataclasses.asdict(getattr(saved, section))
        for key in (k for k in new if new[k] != old[k]):
            raise CheckpointError(
                f"cannot resume {path}: {section}.{key} is {old[key]!r} in the checkpoint but {new[key]!r} "
                "now; drop the override or start a new run"
            )
    if cfg.train.optimizer != saved.train.optimizer:  # the saved optimizer state fits one choice only
        raise CheckpointError(
            f"cannot resume {path}: train.optimizer is {saved.train.optimizer!r} in the checkpoint but "
            f"{cfg.train.optimizer!r} now; drop the override or start a new run"
        )
    return cfg, ckpt, path


def checkpoint_to_resume(target: str | None, out_dir: Path) -> Path:
    """--resume TARGET: a checkpoint file, or a run folder's latest; --resume alone: the newest run's latest
    (load_checkpoint says when the file is not there)."""
    if target:
        return Path(target) / CHECKPOINT_LATEST if Path(target).is_dir() else Path(target)
    try:
        run, _ = newest_run(out_dir)
    except OSError as e:  # a folder it may not list
        raise CheckpointError(f"cannot look for runs in {out_dir}/: {e.strerror or e}; pass --resume RUN_DIR") from None
    if run is None:
        raise CheckpointError(f"no run to resume under {out_dir}/; start one with `python train.py`")
    return run / CHECKPOINT_LATEST


def finalize(cfg: RunConfig, resuming: bool = False) -> RunConfig:
    """A run's final settings, decided here only (train calls it, so train(cfg) from Python gets the same run as
    train.py); running it again changes nothing.
    - model.init_from, on a new run: GPT-2's shape from its config.json, cropped to model.block_size, and
      GPT-2's tokenizer (docs/gpt2.md). A resumed run has both in its checkpoint.
    - data.path: the copy that ships with minigpt, outside the repository (minigpt/shipped.py).
    model.vocab_size alone is set later, by train once the data is prepared: a char vocabulary is the
    corpus's own characters, known only after reading it."""
    if cfg.model.init_from and not resuming:
        data = dataclasses.replace(cfg.data, tokenizer="gpt2")
        cfg = dataclasses.replace(cfg, model=hf.fine_tune_config(cfg.model), data=data)
    return shipped_corpus(cfg)


def resolve(argv: list[str]) -> tuple[RunConfig, dict[str, Any] | None, Path | None]:
    """The final settings of `python train.py ARGV`, to look at before training: finalize(from_argv(argv)),
    with the checkpoint resumed and its path."""
    cfg, ckpt, path = from_argv(argv)
    return finalize(cfg, resuming=ckpt is not None), ckpt, path


def shipped_corpus(cfg: RunConfig) -> RunConfig:
    """Outside the repository, data/shakespeare/input.txt (the default) and the shipped configs' corpora mean
    the copies that ship with minigpt; runs and the token cache are still written under the current folder."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, path=str(shipped.find(cfg.data.path))))


def prepare_data(cfg: DataConfig, rt: runtime.Runtime) -> PreparedData:
    """Rank 0 prepares (or reuses) the token files; the other ranks wait, then read them."""
    data, error = None, None
    if rt.is_main:
        try:
            data = prepare(cfg, progress=True)
        except DataError as e:
            error = e
    if not runtime.all_ranks(error is None):  # a failure on rank 0 stops every rank
        raise error or DataError("rank 0 could not prepare the data; see its error message")
    return data if data is not None else prepare(cfg, progress=False)


def build_model(cfg: RunConfig, rt: runtime.Runtime, pretrained: bool = False) -> tuple[GPT, torch.nn.Module]:
    """The plain model (with GPT-2's weights if pretrained), and what the training step calls: it wrapped for
    FSDP, compile and DDP."""
    model = GPT(cfg.model)
    if pretrained:
        model.load_state_dict(hf.from_hf_state(hf.read_weights(hf.find(str(cfg.model.init_from))), cfg.model))
    model = model.to(rt.device)
    if rt.world_size > 1 and cfg.train.parallel == "fsdp":
        # each block's weights sharded across ranks (gathered just in time), then the rest as the root
        for block in model.h:
            fully_shard(block)
        fully_shard(model)
    train_model = torch.compile(model) if cfg.train.compile else model
    if rt.world_size > 1 and cfg.train.parallel == "ddp":
        device_ids = [rt.device.index] if rt.device.type == "cuda" else None
        train_model = DistributedDataParallel(train_model, device_ids=device_ids)
    return model, train_model


def new_run_dir(cfg: RunConfig) -> Path:
    """runs/<run_name>, or runs/<corpus>-<tokenizer>-<date>-<time>; never an existing run."""
    data, p = cfg.data, Path(cfg.data.path)
    corpus = p.parent.name if p.stem in ("input", "train", "data") and p.parent.name else p.stem
    corpus = data.hf_dataset.split("/")[-1] if data.hf_dataset else corpus
    name = cfg.train.run_name or f"{corpus}-{data.tokenizer}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = Path(cfg.train.out_dir) / name
    if (run_dir / CHECKPOINT_LATEST).exists():
        raise CheckpointError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick another train.run_name"
        )
    return run_dir


def claim_run_dir(run_dir: Path, new: bool) -> Any:
    """Create run_dir and lock it for this process (one process per run folder), then remove temp files
    of saves killed midway. A new run checks again, under the lock, that no other run finished there
    meanwhile (new_run_dir's early check leaves a gap while the data and model are built). Returns the
    open lock file."""
    try:
        lock, owner = runtime.lock_folder(run_dir)
    except OSError as e:  # nothing was trained yet
        raise CheckpointError(f"cannot write the run folder {run_dir}: {write_failure(e)}; {_write_fix(e)}") from None
    if owner is not None:
        raise CheckpointError(
            f"{run_dir} is in use by another training process (pid {owner}); wait for it to finish, "
            "or pick another train.run_name"
        )
    if new and (run_dir / CHECKPOINT_LATEST).exists():
        lock.close()
        raise CheckpointError(
            f"{run_dir} already holds a run (it finished while this one started); continue it with "
            f"--resume {run_dir} or pick another train.run_name"
        )
    remove_stale_temp_files(run_dir)
    return lock


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    """Write the run's resolved settings to config.toml, once the run is accepted (a rejected --resume
    leaves the old file as it was)."""
    try:
        cli.save(cfg, run_dir / "config.toml")
    except OSError as e:
        raise CheckpointError(f"cannot write {run_dir / 'config.toml'}: {write_failure(e)}; {_write_fix(e)}") from None


def _write_fix(e: OSError) -> str:
    return "free some space" if write_failure(e) == "the disk is full" else "choose a writable train.out_dir"


def load_trainer_state(trainer: Trainer, ckpt: dict[str, Any], path: Path | None) -> None:
    """Restore a checkpoint into the trainer, or say in one line why it does not fit this run."""
    try:
        trainer.load_state_dict(ckpt)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointError(
            f"cannot resume {path}: its saved state does not fit the model and optimizer of its config ({reason}); "
            "the checkpoint is inconsistent, start a new run or resume another checkpoint"
        ) from None


def fit_to_processes(cfg: RunConfig, world_size: int) -> tuple[RunConfig, str]:
    """Under torchrun each process runs grad_accum / world_size micro-batches: when grad_accum is not a
    multiple of the processes, pick the smallest one that is and shrink the batch to keep the tokens per
    step the same (1 x 32 on 2 processes becomes 2 x 16), and say so."""
    t = cfg.train
    tokens = t.batch_size * t.grad_accum  # sequences per optimizer step
    for accum in range(world_size, tokens + 1, world_size):
        if accum >= t.grad_accum and tokens % accum == 0:
            train = dataclasses.replace(t, grad_accum=accum, batch_size=tokens // accum)
            note = (f"note: {world_size} processes: train.grad_accum {t.grad_accum} -> {accum} and train.batch_size "
                    f"{t.batch_size} -> {train.batch_size}, the same {tokens} sequences per step")
            return dataclasses.replace(cfg, train=train), note
    raise cli.ConfigError(
        f"train.grad_accum={t.grad_accum} x train.batch_size={t.batch_size} cannot be split evenly over {world_size} "
        f"processes; set train.grad_accum to a multiple of {world_size}"
    )


def probe_tokens(data: PreparedData, tokenizer: Tokenizer, n: int) -> torch.Tensor:
    """A fixed text for attention maps: n val tokens from the first line start among the first 256."""
    head = data.probe_tokens(n + 256).tolist()
    start = next((i + 1 for i in range(len(head) - n) if tokenizer.decode_token(head[i]) == "\n"), 0)
    return torch.tensor(head[start : start + n])


def sample_text(model: GPT, tokenizer: Tokenizer, n_tokens: int, seed: int = 0) -> str:
    _, prompt = default_prompt(tokenizer)
    ids = generate_ids(model, prompt, n_tokens, temperature=0.8, seed=seed)
    return tokenizer.decode(ids[0, len(prompt) :].tolist())


def vocabulary_warning(cfg: RunConfig) -> str | None:
    """A small model under a big vocabulary spends its parameters and time on the embedding and the logits:
    say so before training (GPT-2 BPE on the nano model: 89% embedding, about 8x the char model's FLOPs)."""
    counts, m = count_params(cfg.model), cfg.model
    share = counts["embedding"] / counts["total"]
    if share < 0.5 or m.vocab_size < 1000:
        return None
    ratio = flops_per_token(m)["total"] / flops_per_token(m.replace(vocab_size=256))["total"]
    # the largest power-of-two vocabulary that leaves the embedding under half the parameters (at least 512)
    fits = (n for n in (1 << k for k in range(15, 8, -1)) if n < m.vocab_size and _embedding_share(m, n) < 0.5)
    n = next(fits, 512)
    return (f"note: {share:.0%} of this model's {counts['total'] / 1e6:.2f}M parameters are the {m.vocab_size:,}-token "
            f"embedding, and each step costs about {ratio:.1f}x the FLOPs of the same model on characters; "
            f"for a small model, a BPE trained on your corpus fits better: --data.tokenizer=bpe --data.vocab_size={n} "
            f"({_embedding_share(m, n):.0%} embedding), or --data.tokenizer=char (or pick a wider --model.preset)")


def _embedding_share(m: ModelConfig, vocab_size: int) -> float:
    counts = count_params(m.replace(vocab_size=vocab_size))
    return counts["embedding"] / counts["total"]


def header(
    cfg: RunConfig, data: PreparedData, rt: runtime.Runtime, run_dir: Path, resumed_at: int | None, table: str
) -> str:
    """What train.py prints before the first step; table: format_param_table's, for this model and batch."""
    meta, tok, t = data.meta, data.tokenizer, cfg.train
    weights = f" from {cfg.model.init_from}'s weights" if cfg.model.init_from else ""
    device = f"{rt.device}" + (f" x {rt.world_size} processes" if rt.world_size > 1 else "")
    device += f", dtype {rt.dtype_name}" + (", torch.compile" if t.compile else "")
    resumed = f"  (resumed at iter {resumed_at})" if resumed_at is not None else ""
    lines = [
        f"minigpt: training a {count_params(cfg.model)['total'] / 1e6:.2f}M-parameter GPT{weights}. "
        "Where the parameters are:",
        "",
        table,
        "",
        f"data:      {data.dir}  ({tok.kind} tokenizer, vocab {tok.vocab_size}, "
        f"{meta['train_tokens']:,} train / {meta['val_tokens']:,} val tokens)",
        f"device:    {device}",
        f"batch:     {t.batch_size} x {cfg.model.block_size} tokens x {t.grad_accum} accumulation = "
        f"{t.batch_size * cfg.model.block_size * t.grad_accum:,} tokens per step",
        f"run:       {run_dir}{resumed}",
    ]
    if shipped.is_copy(cfg.data.path):
        lines += [
            f"corpus:    {cfg.data.path}  (shipped with minigpt)",
            f"outputs:   {Path(t.out_dir).resolve()} and {Path(cfg.data.cache_dir).resolve()}  "
            "(under the current folder unless set otherwise)",
        ]
    return "\n".join([*lines, ""])


class _EvaluationLogs:
    """What each evaluation logs besides the losses (the Trainer's on_eval): the probe's attention maps and
    tensors, a sample, and the heads' role scores; it returns the strongest heads for the evaluation's line."""

    def __init__(
        self,
        model: GPT,
        tok: Tokenizer,
        log: LogConfig,
        probe: torch.Tensor,
        roles: RoleProbes | None,
        logger: MetricsLogger,
    ) -> None:
        self.model, self.tok, self.log, self.probe, self.roles = model, tok, log, probe, roles
        self.logger = logger  # replaced by the TensorBoard logger once the run is accepted
        self.scores: dict[str, torch.Tensor] | None = None  # the latest role scores; their table ends the run

    def __call__(self, step: int) -> str | None:
        model, tok, log, probe, roles, logger = self.model, self.tok, self.log, self.probe, self.roles, self.logger
        # each probe's maps are computed once per evaluation, for the images, the tab and the roles
        maps = model.attention_maps(probe) if log.attention_maps or roles is not None else None
        induction_maps = model.attention_maps(roles.induction) if roles is not None else None
        if log.attention_maps:
            labels = [tok.decode_token(int(i)) for i in probe]
            logger.attention(maps, labels, step, ids=probe.tolist())
        if log.attention_maps and log.attention_tensors and roles is not None:
            # the Attention tab also shows the induction probe (its first sequence): the induction head shows there
            first = roles.induction[0]
            labels = [tok.decode_token(int(i)) for i in first]
            logger.attention_tensor(induction_maps[:, 0], labels, step, "induction", first.tolist())
        if log.sample_tokens:
            logger.text("sample", sample_text(model, tok, log.sample_tokens), step)
        if roles is None:
            return None
        # the strongest heads end the evaluation's line; the last table ends the run
        self.scores = head_roles(model, roles.text, roles.induction, text_maps=maps, induction_maps=induction_maps)
        logger.roles(self.scores, step, roles.uniform)
        by_copy = copy_losses(model, roles.induction)
        logger.scalars({f"loss/induction_{k}": v for k, v in by_copy.items()}, step)
        return strongest_heads(self.scores)


def train(
    cfg: RunConfig,
    ckpt: dict[str, Any] | None = None,
    ckpt_path: Path | None = None,
    *,
    stop_at: int | None = None,
    out=sys.stdout,
) -> dict[str, Any]:
    """Run one training job to the end (or until stopped, or to step stop_at); returns the
    Trainer's result plus the run folder and the final sample. cfg is finalized first, as train.py's is:
    train(cli.parse(RunConfig, [...])) works with every setting, and train(*from_argv([..., "--resume"]))
    resumes as train.py does (docs/training.md)."""
    # Long on purpose (~110 lines): one run's wiring, in the order it happens; the pieces it builds (data, model,
    # trainer, logger, run folder lock) are used together, and the try/finally releases them on every path.
    cfg = finalize(cfg, resuming=ckpt is not None)
    rt = runtime.setup(cfg.train.device, cfg.train.dtype)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.train.seed)
    data = prepare_data(cfg.data, rt)
    tok = data.tokenizer
    # the one setting finalize leaves: the vocabulary, known once the corpus is read (finalize says why)
    cfg = dataclasses.replace(cfg, model=cfg.model.replace(vocab_size=tok.vocab_size))
    t, T, log = cfg.train, cfg.model.block_size, cfg.log
    notes = []
    if t.grad_accum % rt.world_size:  # each process does grad_accum / world_size micro-steps
        cfg, note = fit_to_processes(cfg, rt.world_size)
        t, notes = cfg.train, [note]
    if ckpt is not None and ckpt["tokenizer"] != tok.to_dict():
        raise CheckpointError(
            f"cannot resume {ckpt_path}: the corpus now gives a different {tok.kind} vocabulary than "
            "the checkpoint's; restore the corpus or start a new run"
        )
    run_dir = ckpt_path.parent if ckpt_path is not None else new_run_dir(cfg)
    model, train_model = build_model(cfg, rt, pretrained=cfg.model.init_from is not None and ckpt is None)
    tokens = {split: data.load_split(split) for split in ("train", "val")}
    batches = BatchSampler(
        tokens["train"],
        t.batch_size,
        T,
        seed=t.seed,
        rank=rt.rank,
        world_size=rt.world_size,
        micro_steps=t.grad_accum // rt.world_size,
        device=rt.device,
    )
    eval_sets = {split: eval_batches(ids, t.eval_iters, t.batch_size, T) for split, ids in tokens.items()}
    # measured before a resume restores the RNG states (the measurement draws random numbers)
    peak = runtime.measure_peak_flops(rt.device, rt.amp_dtype or torch.float32) if rt.device.type == "cuda" else None
    logger, lock = MetricsLogger(), None
    try:
        if rt.is_main:
            lock = claim_run_dir(run_dir, new=ckpt is None)
        probe = probe_tokens(data, tok, min(log.probe_tokens, T))
        # the induction probe's tokens: the common ones of the training text (minigpt/roles.py)
        roles = role_probes(probe, tokens["train"], tok.vocab_size, T) if log.head_roles else None

        on_eval = _EvaluationLogs(model, tok, log, probe, roles, logger)
        tokens_per_step = t.batch_size * T * t.grad_accum
        trainer = Trainer(
            model,
            t,
            batches,
            train_model=train_model,
            device=rt.device,
            amp_dtype=rt.amp_dtype,
            log=log,
            eval_sets=eval_sets,
            run_dir=run_dir,
            meta={"config": cli.to_dict(cfg), "tokenizer": tok.to_dict()},
            logger=logger,
            out=out,
            on_eval=on_eval,
            tokens_per_step=tokens_per_step,
            flops_per_step=flops_per_token(cfg.model)["total"] * tokens_per_step,
            peak_flops=peak * rt.world_size if peak else None,
        )
        if ckpt is not None:
            load_trainer_state(trainer, ckpt, ckpt_path)
        if rt.is_main:  # the run is accepted: its settings and logs may now be written
            save_config(cfg, run_dir)
            if log.tensorboard:  # a resume drops events after the checkpoint's step, which the run logs again
                logger = trainer.logger = on_eval.logger = TensorBoardLogger(
                    run_dir, purge_step=ckpt["iter"] + 1 if ckpt else None, attention_tensors=log.attention_tensors
                )
            notes += [note for note in (data.skipped_note(), vocabulary_warning(cfg)) if note]
            table = format_param_table(cfg.model, t.batch_size)  # printed, and logged once for a new run
            resumed_at = trainer.iter if ckpt else None
            print(header(cfg, data, rt, run_dir, resumed_at, table), *notes, sep="\n", file=out, flush=True)
            if ckpt is None:
                logger.text("params", table, 0)
                logger.text("config", cli.to_toml(cfg), 0)
        result = trainer.fit(stop_at)
        # every rank samples (in lockstep under FSDP); rank 0 reports
        wants_sample = not result["stopped_by"] and log.sample_tokens > 0 and stop_at is None
        result["sample"] = sample_text(model, tok, log.sample_tokens, seed=1) if wants_sample else ""
        result |= {"run_dir": run_dir, "is_main": rt.is_main}
        if on_eval.scores is not None:
            result["roles"] = format_roles(on_eval.scores, roles.uniform)
        if rt.is_main and not result["stopped_by"]:
            losses = result["losses"]
            final = {k + "_loss": losses.get(k, math.nan) for k in ("val", "train")}
            logger.hparams(cli.to_dict(cfg), final, result["iter"])
        return result
    except OSError as e:  # from TensorBoard's writer: checkpoint writes raise CheckpointError themselves
        raise _tensorboard_write_error(run_dir, e) from None
    finally:
        with contextlib.suppress(OSError):  # a writer that failed fails again as it closes
            logger.close()
        if lock is not None:
            lock.close()


def _tensorboard_write_error(run_dir: Path, e: OSError) -> Exception:
    """The one-line error for TensorBoard events that could not be written: what happened, and the fix."""
    if not run_dir.is_dir():
        return RunFolderLost(
            f"the run folder {run_dir} was deleted or moved during training; nothing more "
            "could be saved; start the run again"
        )
    last = run_dir / CHECKPOINT_LATEST
    then = f"the last good checkpoint {last} is untouched; then: {cli.how_to_run('train')} --resume {run_dir}"
    fix = "free some space" if write_failure(e) == "the disk is full" else "make the run folder writable"
    after = then if last.exists() else "no checkpoint was written yet"
    return CheckpointWriteError(
        f"could not write TensorBoard events in {run_dir}: {write_failure(e)}; {fix} or "
        f"turn TensorBoard off with --log.no_tensorboard; {after}"
    )


def report(result: dict[str, Any]) -> str:
    run_dir = result["run_dir"]
    if result["stopped_by"]:
        return (
            f"\nstopped by {result['stopped_by']} at iter {result['iter']}; checkpoint saved to "
            f"{run_dir / CHECKPOINT_LATEST}\ncontinue with: {cli.how_to_run('train')} --resume {run_dir}"
        )
    why = {"max_seconds": " (train.max_seconds reached)", "stop_loss": " (val loss reached train.stop_loss)"}
    lines = [
        "",
        f"done: {result['iter']} iters in {result['seconds']:.0f} s{why.get(result.get('limit'), '')}; val loss "
        f"{result['losses'].get('val', math.nan):.4f} (best {result['best_val_loss']:.4f})",
    ]
    if result["sample"]:
        lines += ["", "sample:", result["sample"].strip("\n")]
    if result.get("roles"):
        lines += ["", "head roles at the end (mean attention weight; docs/attention.md):", result["roles"]]
    lines += [
        "",
        f"checkpoints: {run_dir / CHECKPOINT_BEST}, {run_dir / CHECKPOINT_LATEST}",
        f"TensorBoard: tensorboard --logdir {run_dir.parent} --samples_per_plugin images=0   (0: every step)",
        f"sample more: {cli.how_to_run('sample')} --run {run_dir}",
    ]
    return "\n".join(lines)


STOP_EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143}
"""A run stopped by a signal saves, then exits as the shell expects of that signal (128 + its number), so
`python train.py && python sample.py` does not go on after Ctrl-C."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> int:
        result = train(*from_argv(argv))  # train finalizes the settings
        if result["is_main"]:
            print(report(result), flush=True)
        return STOP_EXIT_CODES.get(result["stopped_by"], 1) if result["stopped_by"] else 0

    try:
        return entry.run(body, after_help=USAGE_EXTRA)
    finally:
        runtime.teardown()
