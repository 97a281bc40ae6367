"""Checkpoints: written atomically, loaded without running code.

A checkpoint is one file made by torch.save of plain data: tensors, numbers, strings,
lists and dicts (the resolved config and the tokenizer as JSON-able dicts). It loads
with torch.load(weights_only=True), so a file from elsewhere cannot execute code.
"""

from __future__ import annotations

import errno
import math
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from minigpt.config import ModelConfig
from minigpt.config_io import from_dict
from minigpt.errors import Fault, UserError
from minigpt.model import GPT
from minigpt.tokenizer import Tokenizer, tokenizer_from_dict

FORMAT = "minigpt-checkpoint"
VERSION = 1
# the two files every run folder holds: the lowest validation loss, and the newest state
CHECKPOINT_BEST = "ckpt_best.pt"
CHECKPOINT_LATEST = "ckpt_latest.pt"


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, not ours, or does not fit the run."""


class CheckpointWriteError(Fault):
    """A checkpoint (or another file of a run) could not be written while the run trained: a full disk, a
    folder made read-only. A runtime fault (exit 1), not bad input; the last good checkpoint is kept."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write payload to path atomically: temp file in the same folder, fsync, rename.

    A crash at any moment leaves either the old file or the new one, never half a file. A failed
    write (a full disk, a read-only folder) raises CheckpointError and leaves the old file as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, "version": VERSION, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if not isinstance(e, (OSError, RuntimeError)):  # torch.save wraps an OSError in a RuntimeError
            raise
        old = f"the last good checkpoint {path} is untouched" if path.exists() else "no older checkpoint exists"
        need = _size(payload)
        reason = write_failure(e, path.parent, need + 2**20)
        raise CheckpointWriteError(
            f"could not write {path}: {reason}; it needs about {need / 2**20:.1f} MiB free; {old}"
        ) from None
    dir_fd = os.open(path.parent, os.O_RDONLY)  # make the rename itself durable
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def write_failure(e: BaseException, folder: Path | None = None, need: int = 0) -> str:
    """Why a write failed, in a few words: "the disk is full", or the OS's own reason. A full disk
    is told by the errno, or (torch.save hides it) by less free space in folder than need bytes."""
    cause = e.__cause__ if isinstance(e.__cause__, OSError) else e
    full = getattr(cause, "errno", None) == errno.ENOSPC or "No space left" in str(e)
    if full or (folder is not None and shutil.disk_usage(folder).free < need):
        return "the disk is full"
    return getattr(cause, "strerror", None) or str(e).splitlines()[0][:120]


def _size(obj: Any) -> int:
    """Bytes of the tensors in a nested payload: about the size of its checkpoint file."""
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()
    return sum(_size(v) for v in items)


def remove_stale_temp_files(run_dir: Path) -> None:
    """Delete this run folder's leftover temp checkpoints (from a process killed mid-save)."""
    for p in run_dir.glob(".ckpt_*.tmp"):
        p.unlink(missing_ok=True)


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False, resume: bool = False
) -> dict[str, Any]:
    """Load and sanity-check a checkpoint; raise CheckpointError with a one-line reason. mmap=True maps the
    file instead of reading it: only the tensors used are ever read (the weights, not the optimizer's state).
    resume=True also checks that training can continue from it (check_resumable)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass a checkpoint file such as {path / 'ckpt_best.pt'}")
    if not path.exists():
        raise CheckpointError(f"no checkpoint at {path}; check the path or train one with `python train.py`")
    # torch.save has written zip files since PyTorch 1.6, and so has minigpt always: anything else is
    # refused before torch reads it, by what it is (torch's own message would be about mmap or unsafe loading)
    if not _head(path).startswith(ZIP_MAGIC):
        raise CheckpointError(f"{path} is not a minigpt checkpoint: {what_file_is(path)}")
    ckpt = read_torch_file(path, "minigpt checkpoint", map_location=map_location, mmap=mmap)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a PyTorch file but not a minigpt checkpoint (no '{FORMAT}' marker)")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {ckpt.get('version')}; this minigpt reads version {VERSION}"
        )
    for key in ("model", "config", "tokenizer"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is missing '{key}'; it was not written by minigpt's trainer")
    if resume:
        check_resumable(ckpt, path)
    return ckpt


ZIP_MAGIC = b"PK\x03\x04"


def _head(path: Path) -> bytes:
    """The first bytes of a file, which tell its format."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None


def what_file_is(path: Path) -> str:
    """What a file that is not a readable PyTorch file looks like, told by its first bytes."""
    head = _head(path)
    if not head:
        return "it is empty"
    if head.startswith(ZIP_MAGIC):
        return "it is a zip archive, but truncated, damaged, or holding more than tensors and plain data"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):  # pickle's PROTO opcode
        return (
            "it is a Python pickle (a plain one, or PyTorch's legacy format from before version 1.6), "
            "not a zip file written by torch.save"
        )
    return "it is neither a PyTorch zip file nor a pickle (random bytes, or another format)"


def read_torch_file(path: Path, kind: str, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """torch.load(weights_only=True): tensors and plain data only, so no code in the file can run. Any failure
    is one CheckpointError saying what the file is; torch's own text is not passed on, as it advises loading
    with weights_only=False, which would run whatever code the file holds. `kind` names the file expected."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated zip (an OSError when mapped), random bytes, or pickled code
        if blocked := re.search(r"GLOBAL ([\w.]+)", str(e)):
            raise CheckpointError(
                f"refused {path}: it asks to load the Python object {blocked.group(1)}, which could run code; "
                f"minigpt loads only tensors and plain data from a {kind}"
            ) from None
        raise CheckpointError(f"{path} is not a readable {kind}: {what_file_is(path)}") from None  # or cannot read it


def weights_mismatch(
    shapes: dict[str, tuple[int, ...]], config: ModelConfig, transposed: tuple[str, ...] = ()
) -> str | None:
    """Why tensors of these names and shapes cannot be GPT(config)'s weights, in a few words; None if they can.
    Names are minigpt's; the tensors whose names end in `transposed` are stored (in, out)."""
    if "wte.weight" not in shapes and not any(k.startswith("h.") for k in shapes):
        return f"none of its {len(shapes)} tensors has a GPT-2 name ({_some(list(shapes))})"
    # the layers first: a config asking for far more layers than are stored would take long to build
    layers = sorted({int(m[1]) for k in shapes if (m := re.match(r"h\.(\d+)\.", k))})
    if layers != list(range(config.n_layer)):
        held = f"h.0 to h.{layers[-1]}" if layers == list(range(len(layers))) and layers else str(len(layers))
        return f"it holds layers {held} but the config says n_layer={config.n_layer}"
    expected = {k: tuple(v.shape) for k, v in GPT.empty(config).state_dict().items()}
    expected = {k: shape[::-1] if k.endswith(transposed) else shape for k, shape in expected.items()}
    if missing := [k for k in expected if k not in shapes]:
        return f"it lacks {len(missing)} of the model's tensors ({_some(missing)})"
    if extra := [k for k in shapes if k not in expected]:
        return f"it holds {len(extra)} tensor(s) the model does not have ({_some(extra)})"
    for key, shape in expected.items():
        if tuple(shapes[key]) != shape:
            return f"{key} is {_shape(shapes[key])} but the config asks for {_shape(shape)}"
    return None


def _some(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(map(str, shape)) or "a scalar"


def is_state_dict(state: Any) -> bool:
    """Whether state is a dict of named tensors, as load_state_dict takes."""
    return isinstance(state, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())


def bad_values(state: dict[str, torch.Tensor]) -> str | None:
    """The first tensor that cannot be a weight (not floating point, or holding NaN or inf), in a few words."""
    for key, value in state.items():
        if not value.is_floating_point():
            return f"{key} holds {str(value.dtype).removeprefix('torch.')} numbers, not floating point weights"
        # a sum is NaN or inf when a term is (or when huge terms overflow), and is much cheaper than
        # isfinite().all() on a CPU: the exact test runs only where the sum is not finite
        if not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
            return f"{key} holds NaN or inf"
    return None


def check_model_state(ckpt: dict[str, Any], path: str | Path) -> tuple[ModelConfig, Tokenizer]:
    """A loaded checkpoint's model config and tokenizer, once they and its weights are checked against
    each other; a part that does not fit raises CheckpointError. sample.py and train.py --resume both check."""
    if not isinstance(ckpt["config"], dict) or not isinstance(ckpt["config"].get("model"), dict):
        raise CheckpointError(f"{path} has no [model] config; it was not written by minigpt's trainer")
    config = from_dict(ModelConfig, ckpt["config"]["model"], where=[f" in {path}"])
    tokenizer = tokenizer_from_dict(ckpt["tokenizer"])
    if tokenizer.vocab_size != config.vocab_size:
        raise CheckpointError(
            f"{path}: its tokenizer has {tokenizer.vocab_size} tokens but the model {config.vocab_size}; "
            "the checkpoint is inconsistent, use another one"
        )
    state = ckpt["model"]
    if not is_state_dict(state):
        raise CheckpointError(f"{path}: its 'model' is not a dict of tensors; it was not written by minigpt's trainer")
    if why := weights_mismatch({k: tuple(v.shape) for k, v in state.items()}, config):
        raise CheckpointError(
            f"{path}: the weights do not fit its model config: {why}; the file was damaged or edited, "
            "use another checkpoint"
        )
    if why := bad_values(state):
        raise CheckpointError(
            f"{path}: its weights are broken: {why} (a run that diverged?); use an earlier checkpoint, "
            f"such as the run's {CHECKPOINT_BEST}"
        )
    return config, tokenizer


def check_resumable(ckpt: dict[str, Any], path: str | Path) -> None:
    """Refuse a checkpoint that train.py --resume cannot continue: parts that do not fit (check_model_state),
    or training state that is missing or does not fit the weights."""
    check_model_state(ckpt, path)
    if missing := [k for k in ("optimizer", "iter", "best_val_loss", "sampler", "rng") if k not in ckpt]:
        raise CheckpointError(
            f"{path} has no {', '.join(missing)}, so training cannot continue from it; "
            "sample from it, or start a new run"
        )
    step = ckpt["iter"]
    kinds = {  # as the trainer writes them: a hand-edited value would fail deep inside the restore
        "iter": isinstance(step, int) and not isinstance(step, bool) and step >= 0,
        "best_val_loss": isinstance(ckpt["best_val_loss"], (int, float)),
        "sampler": isinstance(ckpt["sampler"], dict) and isinstance(ckpt["sampler"].get("step"), int),
        "rng": _is_rng_state(ckpt["rng"]),
    }
    if bad := [key for key, ok in kinds.items() if not ok]:
        raise CheckpointError(
            f"{path}: its {' and '.join(bad)} is not what minigpt's trainer writes; the file was damaged or "
            "edited, start a new run or resume another checkpoint"
        )
    optimizer = ckpt["optimizer"]
    moments = optimizer.get("state") if isinstance(optimizer, dict) else None
    if not isinstance(moments, dict) or not isinstance(optimizer.get("param_groups"), list):
        raise CheckpointError(f"{path}: its optimizer state is not AdamW's; start a new run")
    for name, moment in moments.items():  # AdamW's running averages have their weight's shape
        weight = ckpt["model"].get(name)
        for key, value in moment.items() if isinstance(moment, dict) else []:
            fits = weight is not None and isinstance(value, torch.Tensor) and value.shape == weight.shape
            if key.startswith("exp_avg") and not fits:
                raise CheckpointError(
                    f"{path}: the optimizer's {key} of {name} does not fit the weights; the file was damaged "
                    "or edited, start a new run or resume another checkpoint"
                )


def _is_rng_state(state: Any) -> bool:
    """Whether state is what rng_state() returns, so that set_rng_state takes it."""
    if not isinstance(state, dict) or not isinstance(state.get("torch"), torch.Tensor):
        return False
    python = state.get("python")
    python_ok = isinstance(python, list) and len(python) == 3 and isinstance(python[1], list)
    return python_ok and state["torch"].dtype == torch.uint8 and state["torch"].shape == torch.get_rng_state().shape


def rng_state() -> dict[str, Any]:
    """Every random generator training touches: Python's, torch's CPU and CUDA ones."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"python": [version, list(internal), gauss], "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_checkpoint(ckpt: str | None = None, run: str | None = None, runs_dir: str = "runs") -> tuple[Path, str]:
    """The checkpoint to sample from and why it was chosen: --ckpt, --run, or the newest run."""
    if ckpt:
        return Path(ckpt), "--ckpt"
    if run:
        found = Path(run) if Path(run).is_file() else _run_checkpoint(Path(run))
        if found is None:
            problem = f"holds no {CHECKPOINT_BEST} or {CHECKPOINT_LATEST}" if Path(run).is_dir() else "is not a folder"
            raise CheckpointError(f"--run {run} {problem}; pass a run folder written by `python train.py`")
        return found, "--run"
    root = Path(runs_dir)
    try:
        newest, count = newest_run(root)
    except OSError as e:  # a folder it may not list
        reason = e.strerror or e
        raise CheckpointError(f"cannot look for runs in {root}/: {reason}; pass --ckpt PATH or --run DIR") from None
    if newest is None:
        raise CheckpointError(
            f"no checkpoint found under {root}/; train a model first with `python train.py` "
            "(or point to one with --ckpt PATH or --run DIR)"
        )
    return _run_checkpoint(newest), f"the newest of {count} run(s) under {root}/"


def newest_run(runs_dir: Path) -> tuple[Path | None, int]:
    """The run folder under runs_dir that saved a checkpoint last, and how many run folders (with a checkpoint)
    it holds: the one meaning of "the newest run", for sampling, exporting and train.py --resume. A folder
    that cannot be listed raises OSError."""
    runs = [d for d in sorted(runs_dir.iterdir()) if _run_checkpoint(d)] if runs_dir.is_dir() else []
    # ckpt_latest.pt is rewritten at every evaluation: the newest run saved last
    newest = max(runs, key=lambda d: max(f.stat().st_mtime for f in d.glob("ckpt_*.pt")), default=None)
    return newest, len(runs)


def _run_checkpoint(run_dir: Path) -> Path | None:
    return next((run_dir / n for n in (CHECKPOINT_BEST, CHECKPOINT_LATEST) if (run_dir / n).is_file()), None)


def load_model(path: str | Path, device: torch.device | str) -> tuple[GPT, Tokenizer, str]:
    """The GPT (eval mode, on device), its tokenizer, and how far it was trained, from a checkpoint."""
    ckpt = load_checkpoint(path, map_location="cpu", mmap=True)
    config, tokenizer = check_model_state(ckpt, path)
    model = GPT.empty(config)
    model.load_state_dict(ckpt["model"], assign=True)
    model.tie_head()  # assign=True gave the head a Parameter of its own
    trained = f"iter {ckpt.get('iter', '?')}"
    if isinstance(best := ckpt.get("best_val_loss"), (int, float)) and math.isfinite(best):
        trained += f", best val loss {best:.4f}"
    return model.to(device).eval(), tokenizer, trained
