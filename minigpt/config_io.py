"""Config files in and out: read a .toml/.json file, check its keys and value types against minigpt.config's
dataclasses, lay such tables over the defaults (`from_dict`), and write a config back (`to_dict`, `to_toml`, `save`).

Checkpoints, runs and every tool read and write configs here; minigpt.cli adds the command line on top.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomli_w

from minigpt import shipped
from minigpt.errors import UserError

T = TypeVar("T")


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


def save(cfg: Any, path: str | Path) -> Path:
    Path(path).write_text(to_toml(cfg), encoding="utf-8")
    return Path(path)


def field_types(cls: type) -> dict[str, Any]:
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


def unknown_key(key: str, valid: Sequence[str], where: str, flag: bool) -> ConfigError:
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


def leaf_types(cls: type, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> type, for every setting of cls and its nested sections."""
    out = {}
    for name, tp in field_types(cls).items():
        if dataclasses.is_dataclass(tp):
            out |= leaf_types(tp, f"{prefix}{name}.")
        else:
            out[prefix + name] = tp
    return out


def _merge(
    cls: type,
    values: dict[str, Any],
    layer: Mapping[str, Any],
    where: str,
    leaves: Sequence[str],
    prefix: str = "",
) -> None:
    """Check a file's (or checkpoint's) keys and value types against cls and write them into values.
    "none" becomes None; a section's `preset` first starts that section over from the preset."""
    for key, value in layer.items():
        tp = field_types(cls).get(key)
        if tp is None:
            raise unknown_key(prefix + key, leaves, where, flag=False)
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
    kwargs = {
        k: _build(tp, values[k]) if dataclasses.is_dataclass(tp) else values[k] for k, tp in field_types(cls).items()
    }
    return cls(**kwargs)


def from_dict(cls: type[T], *layers: Mapping[str, Any], where: Sequence[str] = ()) -> T:
    """Defaults < layers[0] < layers[1] < ...; each layer is checked (`where` names it in errors)."""
    values, leaves = dataclasses.asdict(cls()), list(leaf_types(cls))
    try:
        for i, layer in enumerate(layers):
            _merge(cls, values, layer, where[i] if i < len(where) else "", leaves)
        return _build(cls, values)
    except ValueError as e:  # an unknown preset, or a dataclass's own check in __post_init__ (which names the field)
        raise ConfigError(str(e)) from None
