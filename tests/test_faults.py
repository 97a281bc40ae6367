"""What happens around a run: other processes, full disks, bad folders, killed saves, foreign files."""

import errno
import io
import os
import shutil
import subprocess
import sys

import pytest
import torch

from minigpt import runtime
from minigpt.checkpoint import CheckpointError, CheckpointWriteError, load_checkpoint, save_checkpoint
from minigpt.run import resolve, train
from tests.test_run import ROOT, tiny_args


def start(corpus, root, *extra, stop_at=None):
    cfg, ckpt, path = resolve(tiny_args(corpus, root, *extra))
    return train(cfg, ckpt, path, stop_at=stop_at, out=io.StringIO())


def test_a_run_folder_belongs_to_one_process(corpus, tmp_path):
    held, _ = runtime.lock_folder(tmp_path / "runs/r")  # another process training into the same folder
    with pytest.raises(CheckpointError, match=rf"runs/r is in use by another training process \(pid {os.getpid()}\)"):
        start(corpus, tmp_path)
    held.close()  # the lock goes with its owner
    assert start(corpus, tmp_path, stop_at=1)["iter"] == 1


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt_latest.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(3)}, "config": {}, "tokenizer": {}})

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:672] unexpected pos") from OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointWriteError) as e:
        save_checkpoint(path, {"model": {"w": torch.zeros(1 << 18)}, "config": {}, "tokenizer": {}})
    message = str(e.value)
    assert "\n" not in message and "the disk is full" in message and "1.0 MiB" in message
    assert f"the last good checkpoint {path} is untouched" in message
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt_latest.pt"]  # no temp file left behind


@pytest.mark.parametrize("bad", ["file", "proc"])
def test_an_unwritable_output_folder_fails_before_training(corpus, tmp_path, bad):
    out = tmp_path / "a_file" if bad == "file" else "/proc/minigpt-runs"
    if bad == "file":
        out.write_text("not a folder")
    with pytest.raises(CheckpointError, match=r"cannot write the run folder .*choose a writable train.out_dir"):
        start(corpus, tmp_path, f"--train.out_dir={out}")


def test_stale_temp_files_of_this_run_are_removed_on_resume(corpus, tmp_path):
    start(corpus, tmp_path, stop_at=2)
    run_dir = tmp_path / "runs/r"
    stale = run_dir / ".ckpt_latest.pt.abc123.tmp"  # left by a kill -9 during a save
    stale.write_bytes(b"x" * 1000)
    other = tmp_path / "runs/other/.ckpt_latest.pt.abc123.tmp"  # another run's: not ours to touch
    other.parent.mkdir()
    other.write_bytes(b"x")
    cfg, ckpt, path = resolve(tiny_args(corpus, tmp_path) + ["--resume", str(run_dir)])
    train(cfg, ckpt, path, out=io.StringIO())
    assert not stale.exists() and other.exists()


def test_a_pickle_that_runs_code_is_refused_by_name(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    with pytest.raises(CheckpointError, match=r"refused .*evil.pt: it asks to load the Python object posix.system"):
        load_checkpoint(path)
    truncated = tmp_path / "half.pt"
    save_checkpoint(tmp_path / "full.pt", {"model": {"w": torch.ones(1000)}, "config": {}, "tokenizer": {}})
    truncated.write_bytes((tmp_path / "full.pt").read_bytes()[:500])
    with pytest.raises(CheckpointError, match="half.pt is not a readable minigpt checkpoint: it is a zip archive, but truncated"):
        load_checkpoint(truncated)


def test_half_precision_on_a_cpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: False)
    with pytest.raises(ValueError, match="dtype=bfloat16 on this CPU has no native bfloat16 .*use dtype float32"):
        runtime.setup("cpu", "bfloat16")
    assert runtime.setup("cpu", "float32").amp_dtype is None


def test_one_process_prepares_a_data_cache_at_a_time(tmp_path):
    from minigpt.config import DataConfig
    from minigpt.data import DataError, cache_folder, prepare
    from minigpt.runtime import lock_folder

    cfg = DataConfig(path=str(tmp_path / "c.txt"), cache_dir=str(tmp_path / "cache"))
    (tmp_path / "c.txt").write_text("hello world\n" * 100)
    held, _ = lock_folder(cache_folder(cfg))  # another process preparing the same corpus
    with pytest.raises(DataError, match=rf"is being prepared by another process \(pid {os.getpid()}\)"):
        prepare(cfg, progress=False)
    held.close()
    assert prepare(cfg, progress=False).meta["train_tokens"] > 0


def test_an_unwritable_data_cache_is_one_line(tmp_path):
    from minigpt.config import DataConfig
    from minigpt.data import DataError, prepare

    (tmp_path / "c.txt").write_text("hello world\n" * 100)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(DataError, match="cannot write the data cache .*set data.cache_dir to a writable folder"):
        prepare(DataConfig(path=str(tmp_path / "c.txt"), cache_dir=str(tmp_path / "file")), progress=False)


def _in_tmpfs(mount, size: str, script: str) -> subprocess.CompletedProcess:
    """Run a shell script with a fresh tmpfs of `size` at `mount`, in a private mount namespace."""
    mount.mkdir(exist_ok=True)
    return subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} none {mount} && {script}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture
def tmpfs_available(tmp_path):
    if not shutil.which("unshare") or _in_tmpfs(tmp_path / "probe", "64k", "true").returncode != 0:
        pytest.skip("needs `unshare -rm` and tmpfs mounts (user namespaces), which this machine does not allow")


def test_a_really_full_disk_is_one_line(corpus, tmp_path, tmpfs_available):
    # 256 KiB holds config.toml and the first TensorBoard events, not the 0.3 MiB checkpoint
    args = " ".join(tiny_args(corpus, tmp_path, f"--train.out_dir={tmp_path / 'mnt/runs'}"))
    done = _in_tmpfs(tmp_path / "mnt", "256k", f"{sys.executable} train.py {args}")
    assert done.returncode == 1, done.stderr  # a runtime fault, not bad input
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "could not write" in done.stderr and "ckpt_latest.pt: the disk is full; it needs about" in done.stderr


def test_resume_and_tensorboard_on_a_full_disk_are_one_line(corpus, tmp_path, tmpfs_available):
    mnt = tmp_path / "mnt"
    first = " ".join(tiny_args(corpus, tmp_path, f"--train.out_dir={mnt / 'runs'}", "--train.max_iters=4"))
    resume = " ".join(tiny_args(corpus, tmp_path, f"--train.out_dir={mnt / 'runs'}", "--log.tensorboard"))
    fill = f"dd if=/dev/zero of={mnt / 'fill'} bs=4k 2>/dev/null"  # fails once the disk is full
    check = f"{sys.executable} -c \"import torch; print(torch.load('{mnt / 'runs/r/ckpt_latest.pt'}', weights_only=True)['iter'])\""
    script = f"{sys.executable} train.py {first} >/dev/null && ({fill}; true) && {sys.executable} train.py {resume} --resume; echo rc=$? && {check}"
    done = _in_tmpfs(mnt, "2m", script)
    assert "rc=1" in done.stdout, done.stderr  # a runtime fault, not bad input
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr and "Exception in thread" not in done.stderr
    assert "could not write TensorBoard events in" in done.stderr and "the disk is full" in done.stderr
    assert "the last good checkpoint" in done.stderr and "--resume" in done.stderr
    assert done.stdout.strip().endswith("4")  # the checkpoint is whole and still at its step


def test_tensorboard_write_failures_are_one_line(corpus, tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    start(corpus, tmp_path, stop_at=4)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", full_disk)
    with pytest.raises(CheckpointWriteError) as e:
        start(corpus, tmp_path, "--log.tensorboard", "--resume", str(tmp_path / "runs/r"))
    assert "\n" not in str(e.value)
    assert str(e.value).startswith(f"could not write TensorBoard events in {tmp_path / 'runs/r'}: the disk is full")
    assert load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")["iter"] == 4


def test_config_toml_on_a_full_disk_is_one_line(corpus, tmp_path, monkeypatch):
    from minigpt import cli

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write .*runs/r/config.toml: the disk is full; free some space"):
        start(corpus, tmp_path)


@pytest.mark.parametrize("command", ["-m minigpt.params", "train.py --help", "-m minigpt.bench --help", "sample.py --help"])
def test_a_reader_that_leaves_early_is_no_error(command):
    # `... | head -1`: the pipe closes while the tool still writes
    done = subprocess.run(f"{sys.executable} {command} | head -1; exit ${{PIPESTATUS[0]}}", shell=True,
                          executable="/bin/bash", cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and done.stderr == "" and len(done.stdout.splitlines()) == 1
