"""The installed command: `minigpt train|sample|prepare|params|bench|export [args]`, from any folder.

`pip install .` (or `pip install -e .`) puts `minigpt` on the PATH ([project.scripts] in pyproject.toml);
`python -m minigpt.commands` is the same command. Each subcommand is the `main(argv)` of one module, the
same one train.py, sample.py, data/prepare.py and `python -m minigpt.<tool>` call, so every tool keeps
its flags, errors and exit codes. A subcommand's module is imported only once it is chosen: `minigpt
--help` does not load torch, and the thread settings below are in place before torch starts.

Outside the repository the shipped corpus and configs resolve from the package (minigpt/shipped.py);
runs/ and data/cache/ are written under the current folder.
"""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from collections.abc import Sequence

from minigpt import entry  # no torch: errors only

COMMANDS = {
    "train": ("minigpt.run", "train a GPT (as python train.py)"),
    "sample": ("minigpt.sample_cli", "generate text, or probe attention, from a run or GPT-2 (as python sample.py)"),
    "prepare": ("minigpt.prepare_cli", "tokenize a corpus into data/cache/ ahead of training (as data/prepare.py)"),
    "params": ("minigpt.params_cli", "count parameters, FLOPs and memory from a config (python -m minigpt.params)"),
    "bench": ("minigpt.bench", "benchmarks: training step, attention, generation (python -m minigpt.bench)"),
    "export": ("minigpt.hf", "export a run as a Hugging Face GPT-2 folder (python -m minigpt.hf)"),
}
"""Subcommand -> (the module whose main(argv) it runs, its line in `minigpt --help`)."""


def prepare_threads_env(command: str) -> None:
    """Settings torch reads once, when it starts its thread pool, so they are made before it is imported.
    Training: an OpenMP worker that waits for work spins for about 1,000 rounds, then sleeps (libgomp's
    default is 300,000). On an idle CPU the next operation comes within those rounds; when another program
    holds a core, the long spin kept a 2-thread step 2-8x slower than 1 thread (docs/benchmarks.md, "Threads
    on a shared CPU"). A waiting policy the user set wins."""
    if command == "train" and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "1000")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name.ljust(width)}  {line}" for name, (_, line) in COMMANDS.items()]
    return "\n".join([
        "usage: minigpt COMMAND [CONFIG.toml] [--section.key=value ...]",
        "",
        "commands:",
        *lines,
        "",
        "`minigpt COMMAND --help` lists the settings of one command. Outside the repository, the shipped corpus",
        "and configs (configs/NAME.toml) come from the package; runs/ and data/cache/ go under the current folder.",
    ])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        try:
            print(usage(), file=sys.stdout if argv else sys.stderr, flush=True)
        except BrokenPipeError:  # `minigpt --help | head -1`: the reader left
            return entry.reader_left()
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        close = difflib.get_close_matches(command, COMMANDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"error: unknown command {command!r}{hint}; valid commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    prepare_threads_env(command)
    module = importlib.import_module(COMMANDS[command][0])
    from minigpt import cli  # after torch's settings above: the tool's module has imported it anyway

    cli.COMMAND = f"minigpt {command}"  # its --help and errors name the command that was typed
    try:
        return module.main(rest)
    finally:
        cli.COMMAND = None


if __name__ == "__main__":
    sys.exit(main())
