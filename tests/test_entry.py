"""One entry contract (minigpt/entry.py), checked for each of the six tools against each row of its table:
0 done (a reader that left early included), 2 bad input, 1 a runtime fault, 130 Ctrl-C, and a bug that
keeps its traceback. The failures are triggered cheaply: a bad flag or value, or tyro made to raise."""

import errno
import subprocess
import sys
from pathlib import Path

import pytest
import tyro

from minigpt import bench, entry, hf, params_cli, prepare_cli, run, sample_cli
from minigpt.errors import Fault, UserError

ROOT = Path(__file__).resolve().parent.parent

TOOLS = {
    "train": run.main,
    "sample": sample_cli.main,
    "prepare": prepare_cli.main,
    "params": params_cli.main,
    "bench": bench.main,
    "export": hf.main,
}
"""The six tools, by their `minigpt COMMAND` name (minigpt/commands.py)."""

BAD_VALUE = {
    "train": ["--train.lr=0"],
    "sample": ["--num_samples=0"],
    "prepare": ["--data.workers=-1"],
    "params": ["--batch_size=0"],
    "bench": ["--steps=0"],
    "export": ["--run=/nonexistent/run"],
}
"""A value each tool refuses, quickly: where a test makes the flag parser raise instead, a parser that was
not called (the trigger missed) ends the tool at once, with exit 2, rather than running its work."""


def tyro_raises(monkeypatch, error: BaseException) -> None:
    """Every tool reads its flags with tyro (minigpt/cli.py) before its work: make that fail as the work could."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(tyro, "cli", fail)


@pytest.mark.parametrize("tool", TOOLS)
def test_help_is_done(tool, capsys):
    assert TOOLS[tool](["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ")
    if tool == "train":  # train's own flags, which tyro does not know, follow tyro's help
        assert out.rstrip().endswith(run.USAGE_EXTRA.rstrip())


@pytest.mark.parametrize("tool", TOOLS)
def test_a_bad_flag_or_value_is_one_line_and_exit_2(tool, capsys):
    assert TOOLS[tool](["--no_such_flag"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: unknown option --no_such_flag") and captured.err.count("\n") == 1
    assert TOOLS[tool](BAD_VALUE[tool]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1


@pytest.mark.parametrize("tool", TOOLS)
def test_a_runtime_fault_is_one_line_naming_the_fix_and_exit_1(tool, monkeypatch, capsys):
    tyro_raises(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "runs/x/ckpt_latest.pt"))
    assert TOOLS[tool](BAD_VALUE[tool]) == 1
    err = capsys.readouterr().err
    assert err == "error: runs/x/ckpt_latest.pt: No space left on device; free some space, then run it again\n"
    tyro_raises(monkeypatch, Fault("the run folder runs/x was deleted during training; start the run again"))
    assert TOOLS[tool](BAD_VALUE[tool]) == 1
    assert capsys.readouterr().err == "error: the run folder runs/x was deleted during training; start the run again\n"


@pytest.mark.parametrize("tool", TOOLS)
def test_ctrl_c_exits_130(tool, monkeypatch, capsys):
    tyro_raises(monkeypatch, KeyboardInterrupt())
    assert TOOLS[tool](BAD_VALUE[tool]) == 130
    err = capsys.readouterr().err
    assert err.startswith("interrupted") and err.count("\n") == 1


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize("bug", [RuntimeError("bug"), ValueError("bug"), KeyError("bug")])
def test_a_bug_keeps_its_traceback(tool, bug, monkeypatch, capsys):
    # a plain ValueError is a bug too: only a UserError is bad input
    tyro_raises(monkeypatch, bug)
    with pytest.raises(type(bug), match="bug"):
        TOOLS[tool](BAD_VALUE[tool])
    assert "error:" not in capsys.readouterr().err


READER_LEFT = """
import os, sys
from tests.test_entry import TOOLS
for tool, argv in [*((tool, ["--help"]) for tool in TOOLS), ("params", ["--model.preset", "micro"])]:
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the tool writes its first line
    os.dup2(write, sys.stdout.fileno())
    os.close(write)
    print(tool, TOOLS[tool](argv), file=sys.stderr, flush=True)
"""


def test_a_reader_that_left_early_is_done():
    # `... | head -1`: the pipe closes while the tool still writes; no error, no traceback, exit 0. One process
    # for all six tools (torch is imported once), each writing into a pipe whose reader already left.
    done = subprocess.run([sys.executable, "-c", READER_LEFT], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == ""
    assert done.stderr.splitlines() == [f"{tool} 0" for tool in TOOLS] + ["params 0"]


def test_the_table_in_one_place(monkeypatch, capsys):
    """entry.run itself: what a body returns or raises, and the code and line it becomes."""
    assert entry.run(lambda: None) == 0
    assert entry.run(lambda: 143) == 143  # train's own codes for a run a signal stopped (run.STOP_EXIT_CODES)

    def raises(error):
        def body():
            raise error

        return body

    assert entry.run(raises(UserError("model.n_head=5 does not divide 64; pick another"))) == 2
    assert capsys.readouterr().err == "error: model.n_head=5 does not divide 64; pick another\n"
    assert entry.run(raises(PermissionError(errno.EACCES, "Permission denied", "/etc/x"))) == 1
    fix = "check its permissions, or choose a folder you can write to"
    assert capsys.readouterr().err == f"error: /etc/x: Permission denied; {fix}\n"
    assert entry.run(raises(KeyboardInterrupt()), interrupted="interrupted: kept nothing") == 130
    assert capsys.readouterr().err == "interrupted: kept nothing\n"
    monkeypatch.setenv("RANK", "1")  # under torchrun the other ranks fail alike, silently
    assert entry.run(raises(UserError("bad"))) == 2 and entry.run(raises(OSError("gone"))) == 1
    assert capsys.readouterr().err == ""
