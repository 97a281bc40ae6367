"""Whole training runs on a tiny model: exact resume, logs, configs, errors, DDP, signals."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import load_checkpoint
from minigpt.config import load_config
from minigpt.model import GPT, ModelConfig
from minigpt.params import count_params
from minigpt.run import SECTIONS, Run, main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    text = (ROOT / "data/shakespeare/input.txt").read_text()[:40_000]
    path.write_text(text)
    return path


def tiny_args(corpus, root, *extra):
    return [
        f"--data.path={corpus}", f"--data.cache_dir={root / 'cache'}", f"--train.out_dir={root / 'runs'}",
        "--train.run_name=r", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
        "--model.block_size=16", "--model.dropout=0.1", "--train.batch_size=4", "--train.max_iters=12",
        "--train.eval_interval=4", "--train.eval_iters=2", "--train.warmup_iters=2", "--log.sample_tokens=0",
        "--log.tensorboard=false", "--log.progress=false", *extra,
    ]  # fmt: skip


def tiny_configs(corpus, root, *extra):
    return load_config(SECTIONS, overrides=tiny_args(corpus, root, *extra))


def test_interrupted_and_resumed_run_equals_uninterrupted(corpus, tmp_path):
    full = Run(tiny_configs(corpus, tmp_path / "a"))
    full_result = full.fit()

    part = Run(tiny_configs(corpus, tmp_path / "b"))
    part_result = part.fit(stop_at=6)
    assert part_result["iter"] == 6
    ckpt = tmp_path / "b/runs/r/ckpt_latest.pt"
    resumed = Run(tiny_configs(corpus, tmp_path / "b"), resume_from=ckpt)
    assert resumed.trainer.iter == 6
    resumed_result = resumed.fit()

    # the same loss curve, step for step, and bit-identical final weights
    assert part_result["history"] + resumed_result["history"] == full_result["history"]
    for name, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    assert resumed_result["losses"] == full_result["losses"]
    a = load_checkpoint(tmp_path / "a/runs/r/ckpt_latest.pt")
    b = load_checkpoint(ckpt)
    assert a["iter"] == b["iter"] == 12 and a["best_val_loss"] == b["best_val_loss"]


def test_run_writes_tensorboard_scalars_attention_and_text(corpus, tmp_path):
    from PIL import Image
    import io
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run(tiny_configs(corpus, tmp_path, "--log.tensorboard=true", "--log.sample_tokens=20",
                           "--train.max_iters=8", "--log.log_interval=2", "--log.probe_tokens=12"))
    run.fit()
    run.logger.close()
    acc = EventAccumulator(str(tmp_path / "runs/r"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("loss/train", "loss/val_eval", "loss/train_eval", "lr", "grad_norm", "perf/tokens_per_sec",
                "perf/step_ms", "attention_entropy/layer_1/head_0", "attention_distance/layer_0/head_1"):
        assert tag in tags["scalars"], tag
    assert [e.step for e in acc.Scalars("loss/val_eval")] == [0, 4, 8]
    for tag in ("attention/layer_0/head_0", "attention/layer_1/head_1", "attention/layer_1/all_heads"):
        assert tag in tags["images"], tag
        event = acc.Images(tag)[-1]
        img = Image.open(io.BytesIO(event.encoded_image_string))
        assert img.size == (event.width, event.height) and min(img.size) > 100
    text_tags = tags["tensors"]
    assert any("sample" in t for t in text_tags) and any("config" in t for t in text_tags)


CONFIG_FILES = sorted((ROOT / "configs").glob("*.toml"))


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.stem for p in CONFIG_FILES])
def test_every_config_file_loads(path):
    configs = load_config(SECTIONS, path)
    assert set(configs) == set(SECTIONS)
    model = configs["model"]
    assert count_params(model)["total"] > 0
    if count_params(model)["total"] < 20e6:  # small enough to build here
        GPT(model)


def test_gpt3_config_files_use_their_presets():
    configs = load_config(SECTIONS, ROOT / "configs/gpt3-xl.toml")
    assert configs["model"] == ModelConfig.from_preset("gpt3-xl", attn_impl="sdpa")


def test_bad_settings_exit_2_with_one_line(capsys, tmp_path):
    assert main(["--train.lrr=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "did you mean --train.lr" in err
    assert main(["--model.n_head=3", "--model.n_embd=16", f"--train.out_dir={tmp_path}"]) == 2
    assert "not divisible by model.n_head=3" in capsys.readouterr().err
    assert main(["--bogus"]) == 2
    assert "unknown argument '--bogus'" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path / "nothing")]) == 2
    assert "nothing to resume" in capsys.readouterr().err
    assert main(["--data.path=/no/such/file.txt", f"--train.out_dir={tmp_path}"]) == 2
    assert "/no/such/file.txt" in capsys.readouterr().err


def test_help_lists_every_key(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for key in ("--model.n_layer", "--data.tokenizer", "--train.lr", "--log.probe_tokens", "--resume"):
        assert key in out


def test_resume_rejects_a_changed_model(corpus, tmp_path):
    Run(tiny_configs(corpus, tmp_path)).fit(stop_at=2)
    args = tiny_args(corpus, tmp_path, "--model.n_layer=3") + ["--resume", str(tmp_path / "runs/r")]
    with pytest.raises(ValueError, match="model.n_layer is 2 in the checkpoint but 3 now"):
        from minigpt.run import resolve_configs

        resolve_configs(args)


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    args = tiny_args(corpus, tmp_path, "--train.max_iters=100000", "--log.progress=true")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    lines = []
    for line in proc.stdout:  # wait until training is under way
        lines.append(line)
        if line.startswith("iter") and "|" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, "".join(lines) + out
    assert "stopped by SIGTERM" in out and "--resume" in out
    ckpt = load_checkpoint(tmp_path / "runs/r/ckpt_latest.pt")
    assert ckpt["iter"] > 0


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_processes_match_one_process(corpus, tmp_path, parallel):
    common = ["--train.max_iters=4", "--train.eval_interval=100", "--train.grad_accum=2", "--model.dropout=0.0",
              f"--train.parallel={parallel}"]
    single = subprocess.run([sys.executable, str(ROOT / "train.py"), *tiny_args(corpus, tmp_path / "one", *common)],
                            capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=300)
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


def test_default_run_depends_on_device_and_config_file_replaces_it(tmp_path):
    from minigpt.run import DEFAULTS, resolve_configs

    configs, resume, _ = resolve_configs([f"--train.out_dir={tmp_path}", "--train.device=cpu"])
    assert resume is None
    for key, value in DEFAULTS["cpu"]["model"].items():
        assert getattr(configs["model"], key) == value
    assert configs["train"].max_iters == DEFAULTS["cpu"]["train"]["max_iters"]
    # a config file is the whole recipe: its preset is not mixed with the CPU defaults
    configs, _, _ = resolve_configs([str(ROOT / "configs/baby-gpt.toml"), "--train.device=cpu"])
    assert configs["model"] == ModelConfig.from_preset("baby-gpt")
    assert configs["train"].max_iters == 5000


def test_cpu_config_file_spells_out_the_cpu_default():
    from minigpt.run import resolve_configs

    default, _, _ = resolve_configs(["--train.device=cpu"])
    spelled, _, _ = resolve_configs([str(ROOT / "configs/shakespeare-char-cpu.toml"), "--train.device=cpu"])
    assert default == spelled


def test_corpus_without_newlines_trains_and_samples(tmp_path):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog " * 400)
    run = Run(tiny_configs(corpus, tmp_path, "--train.max_iters=2", "--log.sample_tokens=5"))
    result = run.fit()
    assert result["iter"] == 2 and len(run.sample_text(5)) == 5


def test_resume_with_a_changed_corpus_is_refused(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("abcdefgh\n" * 500)
    Run(tiny_configs(corpus, tmp_path)).fit(stop_at=2)
    corpus.write_text("ABCDEFGH\n" * 500)  # same vocabulary size, other characters
    from minigpt.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="different char vocabulary"):
        Run(tiny_configs(corpus, tmp_path), resume_from=tmp_path / "runs/r/ckpt_latest.pt")


def test_a_new_run_never_overwrites_an_old_one(corpus, tmp_path):
    from minigpt.checkpoint import CheckpointError

    Run(tiny_configs(corpus, tmp_path)).fit(stop_at=1)
    with pytest.raises(CheckpointError, match="already holds a run; continue it with --resume"):
        Run(tiny_configs(corpus, tmp_path))


def test_overrides_are_checked_against_the_defaults_they_apply_to():
    from minigpt.run import resolve_configs

    # lr defaults to 3e-3 in the CPU run (1e-3 in the dataclass): min_lr=2e-3 is valid there
    configs, _, _ = resolve_configs(["--train.device=cpu", "--train.min_lr=2e-3"])
    assert configs["train"].min_lr == 2e-3 and configs["train"].lr == 3e-3
    # a bare bool flag does not take the config file as its value
    configs, _, _ = resolve_configs(["--train.compile", str(ROOT / "configs/baby-gpt.toml"), "--train.device=cpu"])
    assert configs["train"].compile is True and configs["model"].n_layer == 6
