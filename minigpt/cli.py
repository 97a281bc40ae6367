"""Fill minigpt.config's dataclasses from TOML files and flags: `parse(RunConfig, sys.argv[1:], prog=...)`.

Defaults < a base (e.g. a checkpoint's config) < a CONFIG.toml/.json argument < `--section.key=value` flags.
tyro builds the flags and --help; this module reads and writes the files, checks their keys and types,
expands `preset` keys, and turns every error into one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
import os
import re
import sys
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomli_w
import tyro

from minigpt import shipped
from minigpt.errors import UserError

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


class ConfigError(UserError):
    """A bad config file, key or value; the message is one line that names the key and the fix."""


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw tables of a .toml or .json config file; configs/NAME.toml is the shipped one when the current
    folder has no such file (minigpt/shipped.py)."""
    path = shipped.find(path)
    if path.suffix.lower() not in (".toml", ".json"):
        raise ConfigError(f"config file {path} must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a folder; pass a .toml or .json file") from None
    except OSError as e:  # unreadable (permissions), a device, ...
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}; check its permissions") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:].upper()}: {e}") from None
    except RecursionError:  # tables nested thousands deep
        raise ConfigError(f"config file {path} nests its tables too deeply to be a minigpt config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold tables of keys, got {type(data).__name__}")
    return data


NONE_NOTE = '# "none" means None (unset): TOML has no null. Every minigpt config file and flag reads it so.\n'
"""The first line of every config.toml minigpt writes. The key is written, not left out: a preset in the file
would otherwise set it again (gpt3-small's d_head = 64 over a run's d_head = None)."""


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain TOML/JSON-ready data: nested dicts, lists for tuples, "none" for None (TOML has no null; read
    back as None, so an optional text setting cannot hold the word "none" itself)."""

    def plain(items: list[tuple[str, Any]]) -> dict[str, Any]:
        return {k: "none" if v is None else list(v) if isinstance(v, tuple) else v for k, v in items}

    return dataclasses.asdict(cfg, dict_factory=plain)


def to_toml(cfg: Any) -> str:
    """A config as TOML text that `parse` and `from_dict` read back to an equal config."""
    return NONE_NOTE + tomli_w.dumps(to_dict(cfg))


def reader_left() -> int:
    """For `except BrokenPipeError` in an entry point (`python train.py --help | head` stopped reading):
    send the rest of stdout to /dev/null, so Python's exit flush does not fail again, and succeed."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def save(cfg: Any, path: str | Path) -> Path:
    Path(path).write_text(to_toml(cfg), encoding="utf-8")
    return Path(path)


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> type, with Annotated[...] markers (tyro's) stripped."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _arms(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)


def _fits(value: Any, tp: Any) -> bool:
    """Whether a value read from a file has the declared type (no conversion, no guessing; a bool is no number)."""
    if len(arms := _arms(tp)) > 1:
        return any(_fits(value, arm) for arm in arms)
    if typing.get_origin(tp) is Literal:
        return value in typing.get_args(tp) and not isinstance(value, bool)
    if typing.get_origin(tp) is tuple:
        return isinstance(value, (list, tuple)) and all(_fits(v, typing.get_args(tp)[0]) for v in value)
    if isinstance(value, bool):
        return tp is bool
    return isinstance(value, (int, float) if tp is float else tp)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return " or ".join("none" if arm is type(None) else getattr(arm, "__name__", str(arm)) for arm in _arms(tp))


def _unknown(key: str, valid: Sequence[str], where: str, flag: bool) -> ConfigError:
    """An unknown key: the likeliest meant one (the same name in another section first), and the valid keys."""
    section, _, last = key.rpartition(".")
    close = [k for k in valid if k.rpartition(".")[2] == last][:1] or difflib.get_close_matches(key, valid, n=1)
    dash = "--" if flag else ""
    hint = f" (did you mean {dash}{close[0]}?)" if close else ""
    keys = [k.rpartition(".")[2] for k in valid if k.rpartition(".")[0] == section]
    if keys:
        listing = f"valid keys{f' of [{section}]' if section else ''}: {', '.join(keys)}"
    else:  # an unknown section
        listing = f"valid sections: {', '.join(sorted({k.partition('.')[0] for k in valid if '.' in k}))}"
    return ConfigError(f"unknown {'option' if flag else 'key'} {dash}{key}{where}{hint}; {listing}")


def _leaves(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type, for every setting of cls and its nested sections."""
    out = {}
    for name, tp in _fields(cls).items():
        if dataclasses.is_dataclass(tp):
            out |= _leaves(tp, f"{prefix}{name}.")
        else:
            out[prefix + name] = tp
    return out


def _merge(cls: type, values: dict[str, Any], layer: Mapping[str, Any], where: str, leaves: Sequence[str],
           prefix: str = "") -> None:  # fmt: skip
    """Check a file's (or checkpoint's) keys and value types against cls and write them into values.
    "none" becomes None; a section's `preset` first starts that section over from the preset."""
    for key, value in layer.items():
        tp = _fields(cls).get(key)
        if tp is None:
            raise _unknown(prefix + key, leaves, where, flag=False)
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{prefix}{key}{where} must be a table [{prefix}{key}] of keys, got {value!r}")
            if hasattr(tp, "from_preset") and isinstance(value.get("preset"), str) and value["preset"] != "none":
                values[key] = dataclasses.asdict(tp.from_preset(value["preset"]))
            _merge(tp, values[key], value, where, leaves, f"{prefix}{key}.")
            continue
        if value == "none" and type(None) in _arms(tp):
            value = None
        if not _fits(value, tp):
            raise ConfigError(f"{prefix}{key}{where}: expected {_type_name(tp)}, got {value!r}")
        values[key] = tuple(value) if isinstance(value, list) else value


def _build(cls: type[T], values: Mapping[str, Any]) -> T:
    kwargs = {k: _build(tp, values[k]) if dataclasses.is_dataclass(tp) else values[k] for k, tp in _fields(cls).items()}
    return cls(**kwargs)


def from_dict(cls: type[T], *layers: Mapping[str, Any], where: Sequence[str] = ()) -> T:
    """Defaults < layers[0] < layers[1] < ...; each layer is checked (`where` names it in errors)."""
    values, leaves = dataclasses.asdict(cls()), list(_leaves(cls))
    try:
        for i, layer in enumerate(layers):
            _merge(cls, values, layer, where[i] if i < len(where) else "", leaves)
        return _build(cls, values)
    except ValueError as e:  # an unknown preset, or a dataclass's own check in __post_init__ (which names the field)
        raise ConfigError(str(e)) from None


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


def parse(cls: type[T], argv: Sequence[str], *, prog: str, base: Mapping[str, Any] | None = None,
          base_name: str = "", ignore: Sequence[str] = ()) -> T:  # fmt: skip
    """Defaults < base < CONFIG file (a positional .toml/.json argument) < --section.key flags.
    ignore: tables of CONFIG this tool does not use (e.g. [train] when it reads only [model])."""
    argv, prog = list(argv), COMMAND or prog
    layers, where = [base or {}], [f" in {base_name}" if base_name else ""]
    leaves = _leaves(cls)
    # the flag each argument follows, so that `--json out.json` is a value, not a config file
    after = [""] + [a[2:].replace("-", "_") if a.startswith("--") and "=" not in a else "" for a in argv]
    files = [a for a, flag in zip(argv, after) if not a.startswith("-")
             and a.lower().endswith((".toml", ".json")) and leaves.get(flag, bool) is bool]  # fmt: skip
    if len(files) > 1:
        raise ConfigError(f"give one config file, not {len(files)}: {', '.join(files)}")
    for path in files:
        argv.remove(path)
        layers.append({k: v for k, v in read_file(path).items() if k not in ignore})
        where.append(f" in {path}")
    # A preset on the command line starts its section over, like a preset in a file.
    sections = {k for k, tp in _fields(cls).items() if dataclasses.is_dataclass(tp) and hasattr(tp, "from_preset")}
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        section = name[2:].removesuffix(".preset")
        if name[2:].replace("-", "_") == f"{section}.preset" and section in sections:
            value = value if eq else (argv[i + 1] if i + 1 < len(argv) else "")
            layers.append({section: {"preset": value}})
            where.append(f" ({name})")
    default = from_dict(cls, *layers, where=where)

    valid = [*leaves, *(_negated(k) for k, tp in leaves.items() if tp is bool)]
    for arg in (a for a in argv if a.startswith("--") and a != "--help"):
        name = arg.partition("=")[0][2:].replace("-", "_")
        if name not in valid:
            raise _unknown(name, valid, "", flag=True)
        if "=" in arg and leaves.get(name) is bool:
            raise ConfigError(f"--{name} is a switch and takes no value: write --{name} or --{_negated(name)}")
    # "none" spells None in config files (to_dict writes it so); flags of optional fields take it too
    optional = {name for name, tp in leaves.items() if type(None) in typing.get_args(tp)}
    argv = ["None" if a.lower() == "none" and flag in optional else a for a, flag in zip(argv, after)]
    argv = [f"{name}=None" if (name := a.partition("=")[0])[2:].replace("-", "_") in optional
            and a.lower().endswith("=none") else a for a in argv]  # fmt: skip
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return tyro.cli(cls, args=argv, default=default, prog=prog, use_underscores=True)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        raise ConfigError(f"{_one_line(err.getvalue())} (see {prog} --help)") from None
