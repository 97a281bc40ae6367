"""Faults, round two, around a training run: no run replaces another, divergence never replaces a good
checkpoint, non-finite settings are refused, a rejected resume changes nothing, a vanished run folder."""

import io
import math
import shutil
import subprocess
import sys

import pytest
import torch

from minigpt import run as run_module
from minigpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from minigpt.config import TrainConfig
from minigpt.run import fit_to_processes, resolve, train
from minigpt.trainer import NonFiniteLossError, RunFolderLost
from tests.test_run import ROOT, tiny_args


def start(corpus, root, *extra, stop_at=None):
    cfg, ckpt, path = resolve(tiny_args(corpus, root, *extra))
    return train(cfg, ckpt, path, stop_at=stop_at, out=io.StringIO())


def test_a_run_that_finishes_while_another_starts_is_never_replaced(corpus, tmp_path, monkeypatch):
    # Run B passes the early "no run here yet" check, then run A (same name) starts and finishes while B
    # builds its model: B must refuse the folder, not replace A's checkpoint, config and events.
    build = run_module.build_model

    def slow_build(*args, **kwargs):
        monkeypatch.setattr(run_module, "build_model", build)  # A builds normally
        assert start(corpus, tmp_path, "--train.max_iters=8")["iter"] == 8  # run A, start to end
        return build(*args, **kwargs)

    monkeypatch.setattr(run_module, "build_model", slow_build)
    with pytest.raises(CheckpointError, match=r"runs/r already holds a run .*--resume .*runs/r"):
        start(corpus, tmp_path, "--train.max_iters=3")  # run B
    kept = load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")
    assert kept["iter"] == 8 and kept["config"]["train"]["max_iters"] == 8
    assert "max_iters = 8" in (tmp_path / "runs/r/config.toml").read_text()


def test_divergence_never_replaces_the_last_good_checkpoint(corpus, tmp_path):
    start(corpus, tmp_path, "--train.max_iters=4")
    good = load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")
    with pytest.raises(NonFiniteLossError) as e:  # lr 1e9: the weights blow up within a step or two
        start(corpus, tmp_path, "--train.lr=1e9", "--train.max_iters=8", "--train.eval_interval=1",
              "--resume", str(tmp_path / "runs/r"))  # fmt: skip
    message = str(e.value)
    assert "\n" not in message and ("diverged" in message or "loss became" in message)
    assert f"the last good checkpoint {tmp_path / 'runs/r/ckpt_latest.pt'} (iter 4) is untouched" in message
    kept = load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")
    assert kept["iter"] == 4
    for name, value in good["model"].items():
        assert torch.equal(kept["model"][name], value) and torch.isfinite(kept["model"][name]).all()


def test_a_new_run_that_diverges_at_once_writes_no_checkpoint(corpus, tmp_path, monkeypatch):
    # weights already broken at the first evaluation (as weight_decay=inf once did): nothing is saved
    init = run_module.GPT._init_weights

    def broken(self, module):  # bound as a method once set on the class
        init(module)
        if isinstance(module, torch.nn.Linear):
            module.weight.data.fill_(math.nan)

    monkeypatch.setattr(run_module.GPT, "_init_weights", broken)
    with pytest.raises(NonFiniteLossError, match="the run diverged at iter 0 .*no checkpoint was written yet"):
        start(corpus, tmp_path)
    assert not (tmp_path / "runs/r/ckpt_latest.pt").exists() and not (tmp_path / "runs/r/ckpt_best.pt").exists()


@pytest.mark.parametrize("flag", ["--train.weight_decay=inf", "--train.weight_decay=nan", "--train.lr=inf",
                                  "--train.grad_clip=nan", "--train.min_lr=nan", "--train.beta2=nan",
                                  "--model.dropout=nan", "--data.val_fraction=nan"])  # fmt: skip
def test_non_finite_settings_are_refused_up_front(corpus, tmp_path, flag):
    done = subprocess.run([sys.executable, "train.py", *tiny_args(corpus, tmp_path, flag)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert flag.split("=")[0][2:] in done.stderr and ("finite" in done.stderr or "must be" in done.stderr)
    assert not (tmp_path / "runs").exists()


def test_every_float_setting_refuses_infinity():
    for name, value in vars(TrainConfig()).items():
        if isinstance(value, float):
            with pytest.raises(ValueError, match=f"train.{name} must be"):
                TrainConfig(**{name: math.inf})


def test_a_rejected_resume_changes_nothing(corpus, tmp_path):
    start(corpus, tmp_path, "--train.max_iters=4")
    path = tmp_path / "runs/r/ckpt_latest.pt"
    ckpt = load_checkpoint(path)
    ckpt["model"] = {k: v[..., :1] if v.dim() else v for k, v in ckpt["model"].items()}  # weights of another shape
    save_checkpoint(path, ckpt)
    config_before = (tmp_path / "runs/r/config.toml").read_text()
    done = subprocess.run([sys.executable, "train.py", "--resume", str(tmp_path / "runs/r"), "--train.lr=5e-3",
                           "--train.max_iters=9"], cwd=ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "do not fit" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "runs/r/config.toml").read_text() == config_before  # not rewritten with lr 5e-3


@pytest.mark.parametrize("tensorboard", [False, True])
def test_a_run_folder_deleted_while_training_saves_and_says_so(corpus, tmp_path, monkeypatch, tensorboard):
    evaluate = run_module.Trainer.evaluate

    def delete_then_evaluate(self):
        if self.iter == 8:
            shutil.rmtree(self.run_dir)
        return evaluate(self)

    monkeypatch.setattr(run_module.Trainer, "evaluate", delete_then_evaluate)
    extra = ["--log.tensorboard"] if tensorboard else []
    with pytest.raises(RunFolderLost) as e:
        start(corpus, tmp_path, *extra)
    message = str(e.value)
    assert "\n" not in message and "was deleted or moved during training" in message
    assert "free some space" not in message and "--resume" in message
    assert load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")["iter"] == 8  # the work is kept


def test_processes_that_do_not_divide_grad_accum_keep_the_tokens_per_step(corpus, tmp_path):
    cfg = resolve(tiny_args(corpus, tmp_path, "--train.batch_size=32"))[0]
    fitted, note = fit_to_processes(cfg, 2)
    assert (fitted.train.grad_accum, fitted.train.batch_size) == (2, 16)
    assert "2 processes" in note and "32 sequences per step" in note
    odd = resolve(tiny_args(corpus, tmp_path, "--train.batch_size=3"))[0]
    with pytest.raises(ValueError, match="cannot be split evenly over 2 processes"):
        fit_to_processes(odd, 2)


def test_torchrun_with_default_settings_trains_and_errors_print_once(corpus, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py"]
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*torchrun, *tiny_args(corpus, tmp_path, "--train.max_iters=2")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "train.grad_accum 1 -> 2 and train.batch_size 4 -> 2" in done.stdout
    bad = subprocess.run([*torchrun, *tiny_args(corpus, tmp_path / "b", "--train.batch_size=3")], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=180)  # fmt: skip
    assert bad.returncode != 0 and bad.stderr.count("error: train.grad_accum=1 x train.batch_size=3") == 1


def test_an_unreadable_config_file_is_a_read_error_not_a_write_error(corpus, tmp_path):
    from tests.test_data import _as_plain_user

    config = tmp_path / "run.toml"
    config.write_text("[train]\nmax_iters = 2\n")
    config.chmod(0)
    done = subprocess.run(_as_plain_user([sys.executable, "train.py", str(config)]), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"cannot read config file {config}: Permission denied" in done.stderr and "write" not in done.stderr


@pytest.mark.parametrize("content, problem", [("[" * 100_000, "nests its tables too deeply"), (None, "is a folder")])
def test_odd_config_files_are_one_line(tmp_path, content, problem):
    config = tmp_path / "run.json"
    if content is None:
        config.mkdir()
    else:
        config.write_text(content)
    done = subprocess.run([sys.executable, "train.py", str(config)], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and problem in done.stderr, done.stderr
