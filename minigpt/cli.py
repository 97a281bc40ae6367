"""The command line of every tool: `parse(RunConfig, sys.argv[1:], prog=...)` fills minigpt.config's dataclasses.

Defaults < a base (e.g. a checkpoint's config) < a CONFIG.toml/.json argument < `--section.key=value` flags.
tyro builds the flags and --help; this module finds the config file among the arguments, expands `preset`
flags, checks flag names, and turns every error into one line. Reading, checking and writing config files
is minigpt/config_io.py's job.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import tyro

# NONE_NOTE, save and to_toml are re-exported (cli.save, ...) for the tools and scripts written against them;
# new code imports them from minigpt.config_io
from minigpt.config_io import NONE_NOTE as NONE_NOTE
from minigpt.config_io import ConfigError, field_types, from_dict, leaf_types, read_file, to_dict, unknown_key
from minigpt.config_io import save as save
from minigpt.config_io import to_toml as to_toml

T = TypeVar("T")

COMMAND: str | None = None
"""While `minigpt COMMAND` runs a tool (minigpt/commands.py), e.g. "minigpt train": usage lines and errors name
it instead of the tool's script (prog)."""


def how_to_run(tool: str) -> str:
    """How the user starts a tool, for the commands a tool prints: `minigpt sample` under the installed
    command, `python sample.py` in the repository."""
    if COMMAND is not None:
        return f"minigpt {tool}"
    return {"train": "python train.py", "sample": "python sample.py"}.get(tool, f"python -m minigpt.{tool}")


def _negated(key: str) -> str:
    """tyro's switch that turns a bool off: model.bias -> model.no_bias."""
    head, dot, last = key.rpartition(".")
    return f"{head}{dot}no_{last}"


def _one_line(box: str) -> str:
    """tyro's error box (Unicode or ASCII-drawn), as one line: the text under its title."""
    text = "\n".join(line.strip(" │╭╮╰╯─-\t") for line in box.splitlines()).strip()
    body = text.partition("\n")[2].lstrip("\n").partition("\n\n")[0]  # up to the first rule
    message = body.replace("\n", " ").removeprefix("Error parsing ").replace("Expected 1 values", "Expected a value")
    message = re.sub(r"^(?!unrecognized)[A-Za-z_]+: ", "", message, flags=re.I)  # "model: model.n_layer must ..."
    return message[0].lower() + message[1:] if message else "bad command line"


def config_file(cls: type, argv: Sequence[str]) -> str | None:
    """The CONFIG.toml/.json argument of argv, if any: a .toml/.json word that is not the value of a flag
    (`--json out.json` is bench's output file, not a config). More than one is an error."""
    leaves = leaf_types(cls)
    after = [""] + [a[2:].replace("-", "_") if a.startswith("--") and "=" not in a else "" for a in argv]
    files = [
        a
        for a, flag in zip(argv, after)
        if not a.startswith("-") and a.lower().endswith((".toml", ".json")) and leaves.get(flag, bool) is bool
    ]
    if len(files) > 1:
        raise ConfigError(f"give one config file, not {len(files)}: {', '.join(files)}")
    return files[0] if files else None


@dataclasses.dataclass(frozen=True)
class Parsed(Generic[T]):
    """A command line parsed once: the config it gives over its base, and the layers above that base (the
    CONFIG file's tables, then the flags typed), which `over` lays on another base without parsing again.
    Positional arguments (bench's `what`) are not among the layers: `over` is for configs with flags only."""

    config: T
    file: str | None  # the CONFIG file argv names, if any
    layers: tuple[Mapping[str, Any], ...]
    where: tuple[str, ...]  # each layer's name in errors

    def over(self, base: Mapping[str, Any], base_name: str) -> T:
        """The same file and flags over another base (e.g. a checkpoint's settings), checked again there."""
        return from_dict(type(self.config), base, *self.layers, where=(f" in {base_name}", *self.where))


def parse_args(
    cls: type[T],
    argv: Sequence[str],
    *,
    prog: str,
    base: Mapping[str, Any] | None = None,
    base_name: str = "",
    ignore: Sequence[str] = (),
    default_file: Path | None = None,
) -> Parsed[T]:
    """Defaults < base < CONFIG file (a positional .toml/.json argument) < --section.key flags, with tyro run
    once. default_file: the base when argv names no CONFIG file (train.py's default run).
    ignore: tables of CONFIG this tool does not use (e.g. [train] when it reads only [model])."""
    argv, prog = list(argv), COMMAND or prog
    file = config_file(cls, argv)
    if file is None and default_file is not None:
        base, base_name = read_file(default_file), str(default_file)
    layers, where = [], []
    if file is not None:
        argv.remove(file)
        layers.append({k: v for k, v in read_file(file).items() if k not in ignore})
        where.append(f" in {file}")
    leaves = leaf_types(cls)
    # the flag each argument follows (a value such as `none` belongs to it)
    after = [""] + [a[2:].replace("-", "_") if a.startswith("--") and "=" not in a else "" for a in argv]
    # A preset on the command line starts its section over, like a preset in a file.
    sections = {k for k, tp in field_types(cls).items() if dataclasses.is_dataclass(tp) and hasattr(tp, "from_preset")}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        section = name[2:].removesuffix(".preset")
        if name[2:].replace("-", "_") == f"{section}.preset" and section in sections:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            layers.append({section: {"preset": value}})
            where.append(f" ({name})")
    base_where = f" in {base_name}" if base_name else ""
    default = from_dict(cls, base or {}, *layers, where=[base_where, *where])
    typed = _flag_keys(leaves, argv)
    # "none" spells None in config files (to_dict writes it so); flags of optional fields take it too
    optional = {name for name, tp in leaves.items() if type(None) in typing.get_args(tp)}
    argv = ["None" if a.lower() == "none" and flag in optional else a for a, flag in zip(argv, after)]
    for i, arg in enumerate(argv):
        name = arg.partition("=")[0]
        if name[2:].replace("-", "_") in optional and arg.lower().endswith("=none"):
            argv[i] = f"{name}=None"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            cfg = tyro.cli(cls, args=argv, default=default, prog=prog, use_underscores=True)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise ConfigError(f"{_one_line(err.getvalue())} (see {prog} --help)") from None
    return Parsed(cfg, file, (*layers, _flag_layer(cfg, typed)), (*where, ""))


def _flag_keys(leaves: Mapping[str, Any], argv: Sequence[str]) -> list[str]:
    """The settings that argv's --flags name, in order (--no_x names x); an unknown flag, or a value given
    to a switch, is refused with the flag the user typed."""
    switches = {_negated(k): k for k, tp in leaves.items() if tp is bool}
    valid = [*leaves, *switches]
    typed = []
    for arg in (a for a in argv if a.startswith("--") and a != "--help"):
        name = arg.partition("=")[0][2:].replace("-", "_")
        if name not in valid:
            raise unknown_key(name, valid, "", flag=True)
        if "=" in arg and leaves.get(name) is bool:
            raise ConfigError(f"--{name} is a switch and takes no value: write --{name} or --{_negated(name)}")
        typed.append(switches.get(name, name))
    return typed


def _flag_layer(cfg: Any, keys: Sequence[str]) -> dict[str, Any]:
    """The settings the flags named (dotted keys), read back from what tyro parsed, as nested tables in
    to_dict's form: a layer that from_dict lays over any base."""
    parsed, layer = to_dict(cfg), {}
    for key in keys:
        *sections, last = key.split(".")
        value, table = parsed, layer
        for part in sections:
            value, table = value[part], table.setdefault(part, {})
        table[last] = value[last]
    return layer


def parse(
    cls: type[T],
    argv: Sequence[str],
    *,
    prog: str,
    base: Mapping[str, Any] | None = None,
    base_name: str = "",
    ignore: Sequence[str] = (),
) -> T:
    """Defaults < base < CONFIG file (a positional .toml/.json argument) < --section.key flags.
    ignore: tables of CONFIG this tool does not use (e.g. [train] when it reads only [model])."""
    return parse_args(cls, argv, prog=prog, base=base, base_name=base_name, ignore=ignore).config
