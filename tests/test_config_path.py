"""One path from argv to a final RunConfig (issue "Seams"): argv goes through tyro once, `finalize` is the
one place a run's settings become final, and train(cfg) from Python takes the same path as train.py."""

import ast
import io
import os
from pathlib import Path

import pytest
import torch

from minigpt import checkpoint, cli, hf, run, runtime
from minigpt.checkpoint import CHECKPOINT_BEST, CHECKPOINT_LATEST, find_checkpoint, load_checkpoint
from minigpt.config import RunConfig
from minigpt.run import DEFAULT_RUNS, checkpoint_to_resume, finalize, from_argv, resolve, train
from tests.test_run import ROOT, tiny_args

transformers = pytest.importorskip("transformers")  # in the dev extra: a random GPT-2 folder, no download

from tests.test_hf import hf_gpt2  # noqa: E402


@pytest.fixture
def tyro_calls(monkeypatch):
    """How many times argv went through tyro."""
    calls = []
    real = cli.tyro.cli

    def counted(*args, **kwargs):
        calls.append(kwargs.get("args"))
        return real(*args, **kwargs)

    monkeypatch.setattr(cli.tyro, "cli", counted)
    return calls


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    return path


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2-tiny")
    hf_gpt2(dict(n_embd=16, n_head=2, n_layer=2, n_positions=32, vocab_size=50257), folder)
    return folder


def test_on_a_gpu_the_flags_are_laid_over_the_gpu_run_without_parsing_again(tyro_calls, monkeypatch):
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    # batch_size 32 is the CPU run's value too: a flag that matches the first base must still win on the second
    cfg, ckpt, _ = from_argv(["--train.batch_size=32", "--model.no_bias", "--train.max_iters=7"])
    assert len(tyro_calls) == 1 and ckpt is None
    gpu = cli.from_dict(RunConfig, cli.read_file(DEFAULT_RUNS["gpu"]))
    assert cfg.model.replace(bias=True) == gpu.model and cfg.model.bias is False  # baby-gpt, bias switched off
    assert (cfg.train.batch_size, cfg.train.max_iters, cfg.train.eval_iters) == (32, 7, gpu.train.eval_iters)


def test_a_config_file_is_found_once_and_replaces_the_default_run(tyro_calls, monkeypatch):
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    argv = [str(ROOT / "configs/induction.toml"), "--train.lr=2e-3"]
    args = cli.parse_args(RunConfig, argv, prog="t", default_file=DEFAULT_RUNS["cpu"])
    assert args.file == argv[0] and len(tyro_calls) == 1
    # the file is the whole recipe: no default run under it, on the CPU or the GPU
    cfg, _, _ = from_argv(argv)
    assert cfg == args.config == cli.parse(RunConfig, argv, prog="t")
    # `--json out.json` style values are not config files; two files are refused
    assert cli.config_file(RunConfig, ["--data.path", "corpus.json"]) is None
    with pytest.raises(cli.ConfigError, match="give one config file, not 2"):
        cli.config_file(RunConfig, ["a.toml", "b.toml"])


def test_a_resume_parses_argv_once_and_lays_the_flags_over_the_checkpoint(corpus, tmp_path, tyro_calls):
    first = train(*from_argv(tiny_args(corpus, tmp_path, "--train.max_iters=4")), out=io.StringIO())
    assert first["iter"] == 4
    tyro_calls.clear()
    # no model or data flags: those come from the checkpoint; lr and max_iters may change
    argv = ["--resume", "--train.max_iters=8", f"--train.out_dir={tmp_path / 'runs'}", "--train.lr=2e-3"]
    cfg, ckpt, path = from_argv(argv)
    assert len(tyro_calls) == 1 and path == tmp_path / "runs/r" / CHECKPOINT_LATEST
    saved = cli.from_dict(RunConfig, ckpt["config"])
    assert cfg.model == saved.model and cfg.data == saved.data
    assert (cfg.train.max_iters, cfg.train.lr, cfg.train.batch_size) == (8, 2e-3, saved.train.batch_size)


def test_train_finalizes_what_python_gives_it_fine_tuning_and_resuming(gpt2_folder, corpus, tmp_path, monkeypatch):
    """docs/training.md's "From Python": train(cli.parse(...)) with model.init_from, then --resume through
    from_argv; config.json is read once per finalization, and the parameter table built once per run."""
    reads, tables = [], []
    read_config, format_param_table = hf.read_config, run.format_param_table
    monkeypatch.setattr(hf, "read_config", lambda folder: reads.append(folder) or read_config(folder))
    monkeypatch.setattr(run, "format_param_table", lambda *a: tables.append(a) or format_param_table(*a))
    args = [
        f"--data.path={corpus}",
        f"--data.cache_dir={tmp_path / 'cache'}",
        f"--train.out_dir={tmp_path / 'runs'}",
        "--train.run_name=ft",
        f"--model.init_from={gpt2_folder}",
        "--model.block_size=16",
        "--train.batch_size=2",
        "--train.eval_iters=1",
        "--train.eval_interval=2",
        "--log.sample_tokens=0",
        "--log.no_tensorboard",
        "--log.no_progress",
        "--train.device=cpu",
    ]
    # cli.parse gives the settings as typed: the default model, the char tokenizer
    cfg = cli.parse(RunConfig, [*args, "--train.max_iters=2"], prog="python train.py")
    assert cfg.model.n_embd != 16 and cfg.data.tokenizer == "char"
    final = finalize(cfg)
    assert len(reads) == 1  # fine_tune_config reads config.json once
    shape = (final.model.n_layer, final.model.n_embd, final.model.block_size, final.data.tokenizer)
    assert shape == (2, 16, 16, "gpt2")  # config.json's shape, cropped to block_size, and GPT-2's tokenizer
    assert finalize(final) == final  # finalizing again changes nothing
    # train.py's path gives the same model and data (its other defaults are the CPU run's)
    by_argv = resolve([*args, "--train.max_iters=2"])[0]
    assert (by_argv.model, by_argv.data) == (final.model, final.data)
    result = train(cfg, out=io.StringIO())
    assert result["iter"] == 2 and len(tables) == 1
    saved = load_checkpoint(tmp_path / "runs/ft" / CHECKPOINT_LATEST)
    assert saved["config"]["model"]["n_embd"] == 16 and saved["config"]["data"]["tokenizer"] == "gpt2"
    # resuming from Python: train.py's own arguments, --resume included; GPT-2's weights are not read again
    monkeypatch.setattr(hf, "read_weights", lambda folder: pytest.fail("a resume continues from its checkpoint"))
    resumed = train(*from_argv([*args, "--train.max_iters=4", "--resume"]), out=io.StringIO())
    assert resumed["iter"] == 4 and resumed["run_dir"] == tmp_path / "runs/ft" and len(tables) == 2


def test_sampling_and_resuming_agree_on_the_newest_run(tmp_path):
    runs = tmp_path / "runs"
    for i, name in enumerate(["b-older", "a-newer", "c-empty"]):
        (runs / name).mkdir(parents=True)
        if name == "c-empty":
            continue
        for file in (CHECKPOINT_BEST, CHECKPOINT_LATEST):
            (runs / name / file).write_bytes(b"x")
            os.utime(runs / name / file, (1000 * (i + 1), 1000 * (i + 1)))  # a-newer saved last
    assert checkpoint.newest_run(runs) == (runs / "a-newer", 2)
    why = f"the newest of 2 run(s) under {runs}/"
    assert find_checkpoint(runs_dir=str(runs)) == (runs / "a-newer" / CHECKPOINT_BEST, why)
    assert checkpoint_to_resume(None, runs) == runs / "a-newer" / CHECKPOINT_LATEST
    with pytest.raises(checkpoint.CheckpointError, match="no run to resume under"):
        checkpoint_to_resume(None, tmp_path / "nothing")


def test_persistence_does_not_import_the_command_line():
    for module in ("checkpoint.py", "config_io.py"):
        tree = ast.parse((Path(run.__file__).parent / module).read_text(encoding="utf-8"))
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {f"{n.module}.{a.name}" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not any(name.startswith(("minigpt.cli", "minigpt.run")) for name in imported), module
