"""Whole training runs on a tiny model: exact resume, logs, configs, errors, DDP, signals."""

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt import cli
from minigpt.checkpoint import CheckpointError, load_checkpoint
from minigpt.config import ModelConfig, RunConfig
from minigpt.model import GPT
from minigpt.params import count_params
from minigpt.run import DEFAULT_RUNS, main, resolve, train

ROOT = Path(__file__).resolve().parents[1]


def tiny_args(corpus, root, *extra):
    return [
        f"--data.path={corpus}", f"--data.cache_dir={root / 'cache'}", f"--train.out_dir={root / 'runs'}",
        "--train.run_name=r", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
        "--model.block_size=16", "--model.dropout=0.1", "--train.batch_size=4", "--train.max_iters=12",
        "--train.eval_interval=4", "--train.eval_iters=2", "--train.warmup_iters=2", "--log.sample_tokens=0",
        "--log.no_tensorboard", "--log.no_progress", "--train.device=cpu", *extra,
    ]  # fmt: skip


def tiny(corpus, root, *extra) -> RunConfig:
    return resolve(tiny_args(corpus, root, *extra))[0]


def run(corpus, root, *extra, resume=None, stop_at=None):
    args = tiny_args(corpus, root, *extra) + (["--resume", str(resume)] if resume else [])
    cfg, ckpt, path = resolve(args)
    return train(cfg, ckpt, path, stop_at=stop_at, out=io.StringIO())


def test_interrupted_and_resumed_run_equals_uninterrupted(corpus, tmp_path):
    full = run(corpus, tmp_path / "a")
    part = run(corpus, tmp_path / "b", stop_at=6)
    assert part["iter"] == 6
    resumed = run(corpus, tmp_path / "b", resume=tmp_path / "b/runs/r")
    # the same loss curve, step for step, and bit-identical final weights
    assert part["history"] + resumed["history"] == full["history"]
    assert resumed["losses"] == full["losses"]
    a = load_checkpoint(tmp_path / "a/runs/r/ckpt_latest.pt")
    b = load_checkpoint(tmp_path / "b/runs/r/ckpt_latest.pt")
    assert a["iter"] == b["iter"] == 12 and a["best_val_loss"] == b["best_val_loss"]
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name


def _events(path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_run_writes_tensorboard_scalars_attention_and_text(corpus, tmp_path):
    from PIL import Image

    run(corpus, tmp_path, "--log.tensorboard", "--log.sample_tokens=20", "--train.max_iters=8",
        "--log.log_interval=2", "--log.probe_tokens=12")  # fmt: skip
    acc = _events(tmp_path / "runs/r")
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val_eval", "loss/train_eval", "lr", "grad_norm", "perf/tokens_per_sec",
                "perf/step_ms", "attention_entropy/layer_1/head_0", "attention_distance/layer_0/head_1"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("loss/val_eval")] == [0, 4, 8]
    attention = [t for t in tags["images"] if t.startswith("attention")]
    assert len(attention) >= 2, tags["images"]
    for tag in attention:
        event = acc.Images(tag)[-1]
        img = Image.open(io.BytesIO(event.encoded_image_string))
        assert img.size == (event.width, event.height) and min(img.size) > 100
    text_tags = tags["tensors"]
    assert any("sample" in t for t in text_tags) and any("config" in t for t in text_tags)


def test_resuming_a_finished_run_keeps_its_last_evaluation(corpus, tmp_path):
    run(corpus, tmp_path, "--log.tensorboard", "--train.max_iters=8")
    run(corpus, tmp_path, "--log.tensorboard", "--train.max_iters=10", resume=tmp_path / "runs/r")
    steps = sorted({e.step for e in _events(tmp_path / "runs/r").Scalars("loss/val_eval")})
    assert steps == [0, 4, 8, 10]


CONFIG_FILES = sorted((ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])
def test_every_config_file_loads(path):
    cfg = cli.parse(RunConfig, [str(path)], prog="test")
    assert count_params(cfg.model)["total"] > 0
    if count_params(cfg.model)["total"] < 20e6:  # small enough to build here
        GPT(cfg.model)


def test_gpt3_config_files_use_their_presets():
    cfg = cli.parse(RunConfig, [str(ROOT / "configs/gpt3-xl.toml")], prog="test")
    assert cfg.model == ModelConfig.from_preset("gpt3-xl", attn_impl="sdpa")


def test_bad_settings_exit_2_with_one_line(capsys, tmp_path):
    def error(*args):
        assert main(list(args)) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith("error: ")
        return err

    assert "did you mean --train.lr?" in error("--train.lrr=1")
    assert "not divisible by model.n_head=3" in error("--model.n_head=3", "--model.n_embd=16", f"--train.out_dir={tmp_path}")
    assert "unknown option --bogus" in error("--bogus")
    assert f"no checkpoint at {tmp_path / 'nothing'}" in error("--resume", str(tmp_path / "nothing"))
    assert "/no/such/file.txt" in error("--data.path=/no/such/file.txt", f"--train.out_dir={tmp_path}")
    assert "--train.max_iters" in error("--train.max_iters=many")
    assert "--resume RUN_DIR" in error("--resume=x")


def test_help_lists_every_key(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for key in ("--model.n_layer", "--data.tokenizer", "--train.lr", "--log.probe_tokens", "--resume"):
        assert key in out


def test_resume_rejects_a_changed_model(corpus, tmp_path):
    run(corpus, tmp_path, stop_at=2)
    with pytest.raises(CheckpointError, match="model.n_layer is 2 in the checkpoint but 3 now"):
        resolve(tiny_args(corpus, tmp_path, "--model.n_layer=3") + ["--resume", str(tmp_path / "runs/r")])


def test_resume_takes_the_checkpoints_settings(corpus, tmp_path):
    run(corpus, tmp_path, "--train.lr=2e-3", stop_at=2)
    cfg, ckpt, path = resolve(["--resume", str(tmp_path / "runs/r"), "--train.max_iters=20"])
    assert cfg.train.lr == 2e-3 and cfg.train.max_iters == 20 and cfg.model.n_embd == 32
    assert path == tmp_path / "runs/r/ckpt_latest.pt" and ckpt["iter"] == 2


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_a_checkpoint_and_exits_with_its_code(corpus, tmp_path, sig, code):
    # Ctrl-C (SIGINT) saves and exits 130, SIGTERM 143: `train.py && sample.py` must not go on
    args = tiny_args(corpus, tmp_path, "--train.max_iters=100000", "--train.eval_interval=50")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)  # fmt: skip
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if line.startswith("iter    50:"):
            break
    proc.send_signal(sig)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == code, "".join(lines) + out
    assert f"stopped by {sig.name}" in out and "--resume" in out
    assert load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")["iter"] > 50


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_process(corpus, tmp_path, parallel):
    common = ["--train.max_iters=4", "--train.eval_interval=100", "--train.grad_accum=2", "--model.dropout=0.0",
              f"--train.parallel={parallel}"]  # fmt: skip
    single = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_args(corpus, tmp_path / "one", *common)],
                            capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "train.py"),
         *tiny_args(corpus, tmp_path / "two", *common)],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "x 2 processes" in ddp.stdout
    a = load_checkpoint(tmp_path / "one/runs/r/ckpt_latest.pt")
    b = load_checkpoint(tmp_path / "two/runs/r/ckpt_latest.pt")
    assert a["iter"] == b["iter"] == 4
    # the same global batches and the same averaged gradients: equal up to float summation order
    for name, value in a["model"].items():
        torch.testing.assert_close(b["model"][name], value, atol=1e-5, rtol=1e-4)
    assert abs(a["best_val_loss"] - b["best_val_loss"]) < 1e-4


def test_default_run_is_the_cpu_file_and_a_config_file_replaces_it(tmp_path):
    default, resume, _ = resolve([f"--train.out_dir={tmp_path}", "--train.device=cpu"])
    spelled = cli.parse(RunConfig, [str(DEFAULT_RUNS["cpu"]), f"--train.out_dir={tmp_path}", "--train.device=cpu"], prog="test")
    assert resume is None and default == spelled
    assert default.model.n_layer == 4 and default.train.max_iters == 2500
    # a config file is the whole recipe: its preset is not mixed with the CPU defaults
    cfg, _, _ = resolve([str(ROOT / "configs/baby-gpt.toml"), "--train.device=cpu"])
    assert cfg.model == ModelConfig.from_preset("baby-gpt") and cfg.train.max_iters == 5000


def test_corpus_without_newlines_trains_and_samples(tmp_path):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog " * 400)
    result = run(corpus, tmp_path, "--train.max_iters=2", "--log.sample_tokens=5")
    assert result["iter"] == 2 and len(result["sample"]) == 5


def test_resume_with_a_changed_corpus_is_refused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefgh\n" * 500)
    run(corpus, tmp_path, stop_at=2)
    corpus.write_text("ABCDEFGH\n" * 500)  # same vocabulary size, other characters
    with pytest.raises(CheckpointError, match="different char vocabulary"):
        run(corpus, tmp_path, resume=tmp_path / "runs/r")


def test_a_new_run_never_overwrites_an_old_one(corpus, tmp_path):
    run(corpus, tmp_path, stop_at=1)
    with pytest.raises(CheckpointError, match="already holds a run; continue it with --resume"):
        run(corpus, tmp_path)


def test_overrides_are_checked_against_the_defaults_they_apply_to():
    # lr is 3e-3 in the CPU run (1e-3 in the dataclass): min_lr=2e-3 is valid there
    cfg, _, _ = resolve(["--train.device=cpu", "--train.min_lr=2e-3"])
    assert cfg.train.min_lr == 2e-3 and cfg.train.lr == 3e-3
    # a bool switch does not take the config file as its value
    cfg, _, _ = resolve(["--train.compile", str(ROOT / "configs/baby-gpt.toml"), "--train.device=cpu"])
    assert cfg.train.compile is True and cfg.model.n_layer == 6
