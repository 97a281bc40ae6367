"""Where training runs: device and dtype choice, torch.distributed setup, peak FLOPs.

Multi-process training uses PyTorch's own engine: `torchrun` sets RANK, LOCAL_RANK and
WORLD_SIZE, and we join its process group (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from minigpt.errors import UserError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None  # None: plain float32, no autocast
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def dtype_name(self) -> str:
        return {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[self.amp_dtype]


def resolve_device(preference: str, local_rank: int = 0) -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU. An unavailable explicit choice is an error."""
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if preference == "auto":
        preference = next(kind for kind, ok in available.items() if ok)
    if not available[preference]:
        raise UserError(f"device={preference} is not available on this machine; use device auto or cpu")
    return torch.device("cuda", local_rank) if preference == "cuda" else torch.device(preference)


def resolve_dtype(preference: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: auto is bfloat16 on CUDA (float16 if the GPU lacks bf16), else float32."""
    if preference == "auto" and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"auto": None, "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[preference]


def setup(device_preference: str, dtype_preference: str) -> Runtime:
    """Pick the device and dtype; join the torchrun process group when there is one."""
    rank, local_rank, world_size = (
        int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("LOCAL_RANK", 0), ("WORLD_SIZE", 1))
    )
    device = resolve_device(device_preference, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        # TF32 matmuls: ~same accuracy for training, several times the fp32 throughput on Ampere+
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp_dtype = resolve_dtype(dtype_preference, device)
    if device.type == "cpu" and amp_dtype is not None and not cpu_has_native(amp_dtype):
        raise UserError(
            f"dtype={dtype_preference} on this CPU has no native {dtype_preference} instructions, which makes "
            "training steps many times slower (19x measured on AVX2); use dtype float32"
        )
    return Runtime(device, amp_dtype, rank, world_size)


def cpu_has_native(dtype: torch.dtype) -> bool:
    """Whether this CPU computes in bf16/fp16 natively (AVX-512 BF16/FP16 or AMX), from /proc/cpuinfo."""
    flags = {torch.bfloat16: ("avx512_bf16", "amx_bf16"), torch.float16: ("avx512_fp16", "amx_fp16")}[dtype]
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: let it run
        return True
    return any(flag in cpuinfo for flag in flags)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def all_ranks(flag: bool) -> bool:
    """True when `flag` is true on every process (a collective: every rank must call it)."""
    if not dist.is_initialized():
        return flag
    t = torch.tensor([float(flag)], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0)


def measure_peak_flops(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192) -> float:
    """Achievable matmul FLOP/s on this device, measured on the spot (CUDA only): a big square
    matmul is as close to peak as real code gets, so MFU against it is honest for this very GPU."""
    from torch.utils import benchmark  # here only: it pulls in setuptools, which no tool needs to start

    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    # Timer warms up first and waits for the GPU before reading the clock
    seconds = benchmark.Timer("a @ b", globals={"a": a, "b": b}).timeit(20).mean
    return 2 * n**3 / seconds


def lock_folder(folder: Path) -> tuple[Any, str | None]:
    """Create folder and take its .lock for this process: (the open lock file, None), held until
    closed or the process ends (even by kill -9), or (None, the owner's pid) when another process
    holds it. Raises OSError when the folder cannot be created or written."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / ".lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        owner = lock.read().strip() or "unknown"
        lock.close()
        return None, owner
    lock.truncate(0)
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock, None
