"""The installed `minigpt` command (minigpt/commands.py) and the shipped files it finds from any folder."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from minigpt import cli, commands, params_cli, shipped
from minigpt.run import DEFAULT_RUNS, resolve

ROOT = Path(__file__).resolve().parents[1]
TINY = (
    "--model.n_layer=1 --model.n_head=2 --model.n_embd=16 --model.block_size=16 --train.batch_size=2 "
    "--train.max_iters=2 --train.eval_interval=2 --train.eval_iters=1 --log.sample_tokens=0 "
    "--log.no_tensorboard --log.no_progress --train.device=cpu --train.run_name=r"
).split()


def python(*args, cwd, **env):
    """A fresh interpreter: what a user's shell runs (the module finds minigpt as the installed command does)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=os.environ | env)


def test_help_lists_every_command_in_one_line_each(capsys):
    assert commands.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "sample", "prepare", "params", "bench", "export"):
        assert [line for line in out.splitlines() if line.split()[:1] == [name]], f"{name} missing from --help"
    assert commands.main([]) == 2  # no command: the same text, as an error
    assert "commands:" in capsys.readouterr().err


def test_unknown_command_is_one_line_naming_the_valid_ones(capsys):
    assert commands.main(["trian", "--train.max_iters=2"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("error: unknown command 'trian' (did you mean train?); valid commands: train, ")
    assert all(name in captured.err for name in commands.COMMANDS)


def test_a_command_runs_its_tools_main_with_the_rest_of_argv(capsys):
    assert commands.main(["params", "--model.preset", "micro", "--batch_size", "3"]) == 0
    via_command = capsys.readouterr().out
    assert params_cli.main(["--model.preset", "micro", "--batch_size", "3"]) == 0
    assert via_command == capsys.readouterr().out and "Parameters of micro" in via_command
    assert commands.main(["params", "--model.preset", "nope"]) == 2  # the tool's own exit code and message
    assert "valid presets" in capsys.readouterr().err


def test_help_and_errors_name_the_command_that_was_typed(capsys):
    assert commands.main(["params", "--help"]) == 0  # tyro's --help exits 0 inside params' main
    assert capsys.readouterr().out.startswith("usage: minigpt params ")
    assert commands.main(["sample", "--top_k", "x"]) == 2
    assert capsys.readouterr().err.strip().endswith("(see minigpt sample --help)")
    assert cli.COMMAND is None  # the tools called directly afterwards name their own script again
    assert params_cli.main(["--seq_len", "x"]) == 2 and "(see python -m minigpt.params --help)" in capsys.readouterr().err


def test_help_loads_no_torch_and_a_command_only_its_own_module(tmp_path):
    script = (
        "import sys; from minigpt import commands; "
        "commands.main(['--help']); print('torch' in sys.modules, file=sys.stderr); "
        "commands.main(['params', '--model.preset', 'micro']); print('minigpt.run' in sys.modules, file=sys.stderr)"
    )
    proc = python("-c", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # --help did not import torch; params did, but not train's module
    assert proc.stderr.split() == ["False", "False"] and "Parameters of micro" in proc.stdout


def test_train_shortens_the_threads_spin_unless_the_user_chose(monkeypatch):
    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    commands.prepare_threads_env("params")
    assert "GOMP_SPINCOUNT" not in os.environ
    commands.prepare_threads_env("train")
    assert os.environ["GOMP_SPINCOUNT"] == "1000" and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "50")  # the user's spin count wins
    commands.prepare_threads_env("train")
    assert os.environ["GOMP_SPINCOUNT"] == "50"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")  # so does a waiting policy
    commands.prepare_threads_env("train")
    assert "GOMP_SPINCOUNT" not in os.environ


def test_train_py_starts_torch_with_the_short_spin():
    # the setting must be in place before torch starts its thread pool: train.py makes it before importing torch
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    probe = "import os, sys; sys.argv = ['train.py']; import train; print(os.environ.get('GOMP_SPINCOUNT'))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "1000", done.stderr


def test_shipped_files_resolve_outside_the_repository_only(tmp_path, monkeypatch):
    assert shipped.find("data/shakespeare/input.txt") == Path("data/shakespeare/input.txt")  # tests run in the repo
    monkeypatch.chdir(tmp_path)
    corpus = shipped.find("data/shakespeare/input.txt")
    assert corpus.is_absolute() and corpus.read_bytes() == (ROOT / "data/shakespeare/input.txt").read_bytes()
    assert shipped.is_copy(corpus) and not shipped.is_copy("data/shakespeare/input.txt")
    assert shipped.find("configs/induction.toml").read_text() == (ROOT / "configs/induction.toml").read_text()
    assert shipped.find("notes/input.txt") == Path("notes/input.txt")  # not shipped: left for the caller's error
    assert all(path.is_file() for path in DEFAULT_RUNS.values())
    # a file of the same name in the current folder comes first
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs/induction.toml").write_text("[train]\nmax_iters = 7\n")
    assert shipped.find("configs/induction.toml") == Path("configs/induction.toml")


def test_resolve_keeps_the_repository_path_and_finds_the_shipped_one_elsewhere(tmp_path, monkeypatch):
    assert resolve([])[0].data.path == "data/shakespeare/input.txt"  # `python train.py` in the repo, as before
    monkeypatch.chdir(tmp_path)
    cfg = resolve(["configs/induction.toml"])[0]  # the shipped config, and the shipped corpus it names
    assert cfg.model.n_layer == 2 and Path(cfg.data.path).is_file() and cfg.data.path.endswith("induction/input.txt")
    assert cfg.train.out_dir == "runs" and cfg.data.cache_dir == "data/cache"  # still under the current folder


def test_train_and_sample_from_another_folder(tmp_path):
    proc = python("-m", "minigpt.commands", "train", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(shipped with minigpt)" in proc.stdout
    assert f"outputs:   {tmp_path / 'runs'} and {tmp_path / 'data/cache'}" in proc.stdout
    assert (tmp_path / "runs/r/ckpt_best.pt").is_file()
    assert (tmp_path / "data/cache/shakespeare-input-char/train.bin").is_file()
    proc = python("-m", "minigpt.commands", "sample", "--max_new_tokens=5", "--seed=1", cwd=tmp_path)
    assert proc.returncode == 0 and "runs/r/ckpt_best.pt" in proc.stderr + proc.stdout, proc.stderr


def test_prepare_from_another_folder_and_the_script_still_works(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert commands.main(["prepare", "--quiet", "configs/induction.toml"]) == 0
    assert "data/cache/induction-input-char/train.bin: 1,350,040 tokens" in capsys.readouterr().out
    proc = python(str(ROOT / "data/prepare.py"), "--data.path=nothing.txt", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "nothing.txt" in proc.stderr


def test_wheel_ships_the_corpora_configs_and_the_command(tmp_path):
    """A non-editable install gets everything from the wheel: build one from a copy of the sources (no network)."""
    src = tmp_path / "src"
    for name in ("pyproject.toml", "README.md", "minigpt", "configs", "data/shakespeare", "data/induction"):
        dest = src / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-r", str(ROOT / name), str(dest)], check=True)
    pip = ["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index"]
    build = python(*pip, "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    if build.returncode and "No module named" in build.stderr:
        pytest.skip(f"cannot build a wheel here: {build.stderr.strip().splitlines()[-1]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "dist").glob("minigpt-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for config in (ROOT / "configs").glob("*.toml"):
        assert f"minigpt/shipped/configs/{config.name}" in names
    assert {"minigpt/shipped/data/shakespeare/input.txt", "minigpt/shipped/data/induction/input.txt"} <= names
    assert "minigpt/assets/gpt2.tiktoken" in names and "minigpt/presets.toml" in names
    assert "minigpt = minigpt.commands:main" in entry_points
