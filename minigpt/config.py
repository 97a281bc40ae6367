"""Typed configs: TOML/JSON files, dotted command-line overrides, --help text and round-trips.

Each concern owns a frozen dataclass (ModelConfig, TrainConfig, ...) in its own module, with a
string literal under every field that documents it. This module is the generic machinery that
fills those dataclasses; it knows nothing about GPTs:

    sections = {"model": ModelConfig, "train": TrainConfig}
    path, overrides, rest = split_argv(sys.argv[1:])
    configs = load_config(sections, path, overrides)   # {"model": ModelConfig(...), ...}

Precedence is command line > config file > dataclass defaults. Strings are parsed by each
field's declared type (never eval). Unknown sections, unknown keys and bad values raise
ConfigError, a ValueError with a one-line message that names the key and the closest valid one.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import json
import math
import re
import textwrap
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, Literal

__all__ = [
    "ConfigError",
    "configs_from_dict",
    "configs_to_dict",
    "field_docs",
    "format_help",
    "load_config",
    "read_config_file",
    "save_config",
    "split_argv",
    "to_toml",
]

_NONE = type(None)
_TRUE_WORDS = ("true", "yes", "on", "1")
_FALSE_WORDS = ("false", "no", "off", "0")
_NONE_WORDS = ("none", "null")
_INT_RE = re.compile(r"[+-]?[0-9]+(?:_[0-9]+)*")  # like Python and TOML: 1_000 is allowed
_BARE_KEY_RE = re.compile(r"[A-Za-z0-9_-]+")
_TOML_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class ConfigError(ValueError):
    """A bad config file, section, key or value; the message is one line meant for the user."""


class _BadValue(Exception):
    """A value that does not fit its field's type; the caller adds which key it was."""


# ---------------------------------------------------------------------------------------------
# Introspection: field docs and types


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> its attribute docstring: the string literal on the line after the field.

    Base-class fields are included. Fields without such a string are left out.
    """
    return dict(_field_docs(cls))


@functools.cache
def _field_docs(cls: type) -> dict[str, str]:
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):  # bases first, so a subclass's docs win
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):  # no source (REPL, exec) means no docs
            continue
        classdef = tree.body[0]
        if not isinstance(classdef, ast.ClassDef):
            continue
        body = classdef.body
        for stmt, after in zip(body, body[1:]):
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(stmt.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[stmt.target.id] = inspect.cleandoc(after.value.value)
    names = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set(docs)
    return {name: doc for name, doc in docs.items() if name in names}


def _has_presets(cls: type) -> bool:
    return callable(getattr(cls, "from_preset", None))


@functools.cache
def _key_types(cls: type) -> dict[str, Any]:
    """Settable key -> its type: the init fields, plus `preset` if the class has from_preset."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"config sections must be dataclass types, got {cls!r}")
    try:
        hints = typing.get_type_hints(cls)
    except NameError as e:
        raise TypeError(f"cannot resolve the type hints of {cls.__qualname__}: {e}") from e
    key_types = {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}
    for name, tp in key_types.items():
        _check_supported(tp, f"{cls.__qualname__}.{name}")
    if _has_presets(cls) and "preset" not in key_types:
        key_types["preset"] = str
    return key_types


def _check_supported(tp: Any, where: str) -> None:
    arms = _union_arms(tp)
    if arms is not None:
        for arm in arms:
            if arm is not _NONE:
                _check_supported(arm, where)
        return
    if typing.get_origin(tp) is Literal:
        if all(type(choice) in (str, int, bool) for choice in typing.get_args(tp)):
            return
    elif (spec := _sequence_spec(tp)) is not None:
        _, item_type, fixed = spec
        for item in fixed if fixed is not None else (item_type,):
            _check_supported(item, where)
        return
    elif tp in (bool, int, float, str) or _is_path_type(tp):
        return
    raise TypeError(
        f"{where}: type {tp!r} is not supported by minigpt.config; use int, float, bool, str, "
        "Path, Literal[...] of str/int, X | None, tuple[X, ...] or list[X]"
    )


def _union_arms(tp: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def _sequence_spec(tp: Any) -> tuple[type, Any, tuple[Any, ...] | None] | None:
    """For list/tuple hints: (container, item type, item types of a fixed-length tuple)."""
    origin = typing.get_origin(tp) or tp
    if origin not in (list, tuple):
        return None
    args = typing.get_args(tp)
    if not args:
        return origin, str, None
    if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
        return tuple, None, args
    return origin, args[0], None


def _is_path_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, PurePath)


def _type_name(tp: Any) -> str:
    """Short spelling of a type for --help and errors: int, {cpu,cuda}, int | none, int,..."""
    arms = _union_arms(tp)
    if arms is not None:
        names = [_type_name(arm) for arm in arms if arm is not _NONE]
        return " | ".join(names + ["none"] * (_NONE in arms))
    if typing.get_origin(tp) is Literal:
        return "{" + ",".join(str(choice) for choice in typing.get_args(tp)) + "}"
    if (spec := _sequence_spec(tp)) is not None:
        _, item_type, fixed = spec
        if fixed is not None:
            return ",".join(_type_name(item) for item in fixed)
        return f"{_type_name(item_type)},..."
    if _is_path_type(tp):
        return "path"
    return tp.__name__


def _expected(tp: Any) -> str:
    """The phrase after 'expected' in an error message."""
    simple = {bool: "a bool", int: "an int", float: "a float", str: "a string"}
    if tp in simple:
        return simple[tp]
    if _is_path_type(tp):
        return "a path"
    if (spec := _sequence_spec(tp)) is not None and spec[2] is None:
        return f"a list of {_type_name(spec[1])}"
    return _type_name(tp)


def _describe(value: Any) -> str:
    """How a value read from a file or dict is shown in an error message."""
    if isinstance(value, bool):
        return f"the bool {str(value).lower()}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, int):
        return f"the int {value}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, (list, tuple)):
        return f"the array {list(value)!r}"
    if isinstance(value, Mapping):
        return "a table"
    if value is None:
        return "null"
    return repr(value)


# ---------------------------------------------------------------------------------------------
# Parsing values by declared type


def _parse_text(text: str, tp: Any) -> Any:
    """Parse a command-line string as type `tp`."""
    arms = _union_arms(tp)
    if arms is not None:
        return _parse_union(text, tp, _parse_text, repr(text), text.strip().lower() in _NONE_WORDS)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            try:
                if _parse_text(text, type(choice)) == choice:
                    return choice
            except _BadValue:
                pass
        raise _choice_error(choices, text, repr(text))
    if _sequence_spec(tp) is not None:
        inner = text.strip()
        if inner[:1] + inner[-1:] in ("[]", "()"):  # tolerate --x=[1,2] and --x=(1,2)
            inner = inner[1:-1]
        items = [item.strip() for item in inner.split(",")] if inner.strip() else []
        return _convert_items(tp, items, _parse_text)
    if tp is bool:
        word = text.strip().lower()
        if word in _TRUE_WORDS or word in _FALSE_WORDS:
            return word in _TRUE_WORDS
        raise _BadValue(f"expected a bool (true/false, yes/no, on/off, 1/0), got {text!r}")
    if tp is int:
        if _INT_RE.fullmatch(text.strip()):
            return int(text)
        raise _BadValue(f"expected an int, got {text!r}")
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise _BadValue(f"expected a float, got {text!r}") from None
    if tp is str:
        return text
    if _is_path_type(tp):
        return tp(text)
    raise TypeError(f"unsupported config type {tp!r}")


def _parse_data(value: Any, tp: Any) -> Any:
    """Check and convert a value read from TOML, JSON or a dict as type `tp`."""
    arms = _union_arms(tp)
    if arms is not None:
        # TOML has no null, so "none" (what to_toml writes for None) also means None.
        is_none = value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)
        return _parse_union(value, tp, _parse_data, _describe(value), is_none)
    if typing.get_origin(tp) is Literal:
        choices = typing.get_args(tp)
        for choice in choices:
            if type(value) is type(choice) and value == choice:
                return choice
        raise _choice_error(choices, value, _describe(value))
    if _sequence_spec(tp) is not None:
        if isinstance(value, (list, tuple)):
            return _convert_items(tp, list(value), _parse_data)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp in (int, float):
        # bool is a subclass of int, but true is not a number in a config file.
        if isinstance(value, int) and not isinstance(value, bool):
            return tp(value)  # an int is fine for a float field
        if tp is float and isinstance(value, float):
            return value
    elif tp is str:
        if isinstance(value, str):
            return value
    elif _is_path_type(tp):
        if isinstance(value, (str, PurePath)):
            return tp(value)
    else:
        raise TypeError(f"unsupported config type {tp!r}")
    raise _BadValue(f"expected {_expected(tp)}, got {_describe(value)}")


def _parse_union(value: Any, tp: Any, parse: Callable[[Any, Any], Any], shown: str, is_none: bool) -> Any:
    arms = typing.get_args(tp)
    if is_none and _NONE in arms:
        return None
    # str accepts any text, so try it last: "3" for `int | str` is the int 3.
    others = sorted((arm for arm in arms if arm is not _NONE), key=lambda arm: arm is str)
    errors = []
    for arm in others:
        try:
            return parse(value, arm)
        except _BadValue as e:
            errors.append(str(e))
    if len(others) == 1:
        raise _BadValue(errors[0] + ("; none is also accepted" if _NONE in arms else ""))
    raise _BadValue(f"expected {_type_name(tp)}, got {shown}")


def _choice_error(choices: tuple[Any, ...], value: Any, shown: str) -> _BadValue:
    names = [str(choice) for choice in choices]
    close = difflib.get_close_matches(str(value), names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return _BadValue(f"expected one of {', '.join(names)}, got {shown}{hint}")


def _convert_items(tp: Any, items: list[Any], parse: Callable[[Any, Any], Any]) -> list | tuple:
    container, item_type, fixed = _sequence_spec(tp)
    if fixed is not None and len(items) != len(fixed):
        raise _BadValue(f"expected {len(fixed)} items ({_type_name(tp)}), got {len(items)}")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse(item, fixed[i] if fixed is not None else item_type))
        except _BadValue as e:
            raise _BadValue(f"item {i + 1}: {e}") from None
    return container(out)


# ---------------------------------------------------------------------------------------------
# Errors for unknown names


def _unknown_section_error(
    section: str, sections: Mapping[str, type], where: str, key: str | None = None
) -> ConfigError:
    """`key` is given for a command-line flag --section.key, None for a file's [section]."""
    close = difflib.get_close_matches(section, list(sections), n=1)
    if key is None:
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        return ConfigError(f"unknown section [{section}]{where}{hint}; valid sections: {', '.join(sections)}")
    hint = f" (did you mean --{close[0]}.{key}?)" if close else ""
    return ConfigError(
        f"unknown option --{section}.{key}: no section [{section}]{hint}; valid sections: {', '.join(sections)}"
    )


def _unknown_key_error(
    section: str, key: str, sections: Mapping[str, type], where: str, cli: bool
) -> ConfigError:
    def show(s: str, k: str) -> str:
        return f"--{s}.{k}" if cli else f"'{s}.{k}'"

    valid = list(_key_types(sections[section]))
    # A key that exists in another section was most likely put in the wrong one.
    owners = [name for name, cls in sections.items() if key in _key_types(cls)]
    close = difflib.get_close_matches(key, valid, n=1)
    guess = show(owners[0], key) if owners else show(section, close[0]) if close else None
    hint = f" (did you mean {guess}?)" if guess else ""
    what = "option" if cli else "key"
    return ConfigError(
        f"unknown {what} {show(section, key)}{where}{hint}; valid keys for [{section}]: {', '.join(valid)}"
    )


# ---------------------------------------------------------------------------------------------
# Reading values from files, dicts and the command line


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's raw data (TOML or JSON), without building any dataclass."""
    return _read_file(path)


def _read_file(path: str | Path) -> Any:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {path} must end in .toml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        return tomllib.loads(text) if suffix == ".toml" else json.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON: {e}") from None


def _values_from_data(
    sections: Mapping[str, type], data: Any, where: str, allow_extra_sections: bool = False
) -> dict[str, dict[str, Any]]:
    """{section: {key: value}} from nested data, each value checked against its field's type."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"config{where} must be a table of sections, got {_describe(data)}")
    out: dict[str, dict[str, Any]] = {}
    for section, table in data.items():
        if section not in sections:
            owners = [name for name, cls in sections.items() if section in _key_types(cls)]
            if owners and not isinstance(table, Mapping):
                raise ConfigError(f"key '{section}'{where} is outside any section; put it under [{owners[0]}]")
            if allow_extra_sections:
                continue
            raise _unknown_section_error(section, sections, where)
        if not isinstance(table, Mapping):
            raise ConfigError(f"'{section}'{where} must be a table [{section}] of keys, got {_describe(table)}")
        key_types = _key_types(sections[section])
        values = out[section] = {}
        for key, value in table.items():
            if key not in key_types:
                raise _unknown_key_error(section, key, sections, where, cli=False)
            try:
                values[key] = _parse_data(value, key_types[key])
            except _BadValue as e:
                raise ConfigError(f"{section}.{key}{where}: {e}") from None
    return out


def _pair_overrides(tokens: Sequence[str]) -> Iterator[tuple[str, str | None]]:
    """Yield (flag, text) from --a.b=v, --a.b v, a.b=v, or a bare --a.b (text None)."""
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if not token.startswith("--"):
            if "=" in token and "." in token.partition("=")[0]:
                token = "--" + token
            else:
                raise ConfigError(f"unexpected argument {token!r}; overrides look like --section.key=value")
        flag, eq, text = token.partition("=")
        if eq:
            yield flag, text
        elif i < len(tokens) and not tokens[i].startswith("--"):
            yield flag, tokens[i]
            i += 1
        else:
            yield flag, None


def _values_from_overrides(sections: Mapping[str, type], overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of strings, not one string")
    out: dict[str, dict[str, Any]] = {}
    for flag, text in _pair_overrides(overrides):
        section, dot, key = flag[2:].partition(".")
        if not dot:
            owners = [name for name, cls in sections.items() if section in _key_types(cls)]
            hint = f" (did you mean --{owners[0]}.{section}?)" if owners else ""
            raise ConfigError(f"unknown option {flag}{hint}; config overrides look like --section.key=value")
        if section not in sections:
            raise _unknown_section_error(section, sections, "", key)
        key_types = _key_types(sections[section])
        if key not in key_types:
            raise _unknown_key_error(section, key, sections, "", cli=True)
        tp = key_types[key]
        if text is None:  # a bare flag switches a bool on
            if tp is not bool and bool not in (_union_arms(tp) or ()):
                raise ConfigError(f"{flag} needs a value: {flag}=VALUE ({_type_name(tp)})")
            text = "true"
        try:
            out.setdefault(section, {})[key] = _parse_text(text, tp)
        except _BadValue as e:
            raise ConfigError(f"{flag}: {e}") from None
    return out


# ---------------------------------------------------------------------------------------------
# Building dataclasses


def _check_sections(sections: Mapping[str, type]) -> None:
    for name, cls in sections.items():
        if not name or not _BARE_KEY_RE.fullmatch(name):
            raise TypeError(f"section name {name!r} must be letters, digits, '_' or '-'")
        _key_types(cls)  # raises TypeError for non-dataclasses and unsupported field types


def _build(
    sections: Mapping[str, type], layers: Sequence[Mapping[str, Mapping[str, Any]]], base_layers: int = 0
) -> dict[str, Any]:
    configs = {}
    for name, cls in sections.items():
        values: dict[str, Any] = {}
        chosen = list(layers)
        if base_layers and _has_presets(cls) and any("preset" in layer.get(name, {}) for layer in layers[base_layers:]):
            # a preset named in the file or on the command line replaces the base's values for
            # its section; keys given explicitly in the file or on the command line still apply
            chosen = chosen[base_layers:]
        for layer in chosen:  # later layers win
            values.update(layer.get(name, {}))
        configs[name] = _make(name, cls, values)
    return configs


def _make(section: str, cls: type, values: dict[str, Any]) -> Any:
    fields = [f for f in dataclasses.fields(cls) if f.init]
    if _has_presets(cls) and "preset" in values:
        # The preset gives the base values; the section's other keys override them.
        is_field = any(f.name == "preset" for f in fields)
        preset = values["preset"] if is_field else values.pop("preset")
        try:
            base = cls.from_preset(preset)
        except ValueError as e:
            raise ConfigError(f"{section}.preset: {e}") from e
        values = {f.name: getattr(base, f.name) for f in fields} | values
    missing = [
        f.name
        for f in fields
        if f.name not in values and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"[{section}] needs a value for {', '.join(missing)}: set it in the config file "
            f"or with --{section}.{missing[0]}=VALUE"
        )
    try:
        return cls(**values)
    except ValueError as e:  # the dataclass's own validation (__post_init__)
        message = str(e)
        # name the section unless the message starts with it (e.g. "model.n_head must ...")
        raise ConfigError(message if message.startswith(f"{section}.") else f"{section}: {message}") from e


def load_config(
    sections: Mapping[str, type],
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    base: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Build one dataclass per section from defaults < base < config file < overrides.

    sections: section name -> dataclass type, e.g. {"model": ModelConfig, "train": TrainConfig}.
    path: a .toml file with one [section] table per section, or a .json file of the same shape.
    overrides: command-line strings "--section.key=value", or "--section.key" "value" as two
        items; a bare "--section.key" sets a bool to true.
    base: nested values as from configs_to_dict (e.g. a checkpoint's config), below the file.
    Returns section name -> dataclass instance, in the order of `sections`.
    Raises ConfigError (a ValueError) with a one-line message for any bad input.
    """
    _check_sections(sections)
    layers = []
    if base is not None:
        layers.append(_values_from_data(sections, base, " in the base config"))
    if path is not None:
        layers.append(_values_from_data(sections, _read_file(path), f" in {path}"))
    layers.append(_values_from_overrides(sections, overrides))
    return _build(sections, layers, base_layers=1 if base is not None else 0)


def split_argv(argv: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """Split command-line arguments into (config path, dotted overrides, everything else).

    The config path is the first positional argument ending in .toml or .json. Overrides are
    the --section.key[=value] arguments, normalised to "--section.key=value" ("--section.key"
    alone for a bare bool flag). The rest (--resume, --help, ...) is left for the script.
    """
    path: str | None = None
    overrides: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        i += 1
        name, eq, _ = token[2:].partition("=")
        if token.startswith("--") and "." in name:
            nxt = argv[i] if i < len(argv) else ""
            is_path = nxt.lower().endswith((".toml", ".json"))  # a bare bool flag before the config file
            if not eq and nxt and not nxt.startswith("--") and not is_path:
                token = f"{token}={argv[i]}"
                i += 1
            overrides.append(token)
        elif path is None and not token.startswith("-") and token.lower().endswith((".toml", ".json")):
            path = token
        else:
            rest.append(token)
    return path, overrides, rest


# ---------------------------------------------------------------------------------------------
# Help text


def format_help(sections: Mapping[str, type], prog: str = "train.py") -> str:
    """--help text: every key with its type, default and one-line description, by section."""
    _check_sections(sections)
    lines = [
        f"usage: {prog} [CONFIG.toml] [--SECTION.KEY=VALUE ...]",
        "",
        "Each setting starts at its default below, then takes the value from CONFIG.toml",
        "(one [section] table per section), then from --section.key=value or --section.key value.",
    ]
    for name, cls in sections.items():
        summary = _class_summary(cls)
        lines += ["", f"[{name}]" + (f"  {summary}" if summary else "")]
        key_types = _key_types(cls)
        docs = _field_docs(cls)
        defaults = {f.name: _default_text(f) for f in dataclasses.fields(cls) if f.init}
        heads = {key: f"--{name}.{key} {_type_name(tp)}" for key, tp in key_types.items()}
        width = min(max(map(len, heads.values()), default=0), 48)
        for key in key_types:
            if key in defaults:
                doc = docs.get(key, "")
                tail = defaults[key]
            else:  # the preset hook
                doc = f"Start from {cls.__name__}.from_preset(NAME); other [{name}] keys override it."
                tail = "optional"
            lines.append(f"  {heads[key]:<{width}}  ({tail})")
            if doc:
                lines.append(f"      {doc.splitlines()[0]}")
    return "\n".join(lines) + "\n"


def _class_summary(cls: type) -> str:
    doc = cls.__doc__ or ""
    if doc.startswith(cls.__name__ + "("):  # the signature dataclass writes when there is no docstring
        return ""
    return inspect.cleandoc(doc).split("\n")[0]


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"default: {_format_cli(f.default)}"
    if f.default_factory is not dataclasses.MISSING:
        return f"default: {_format_cli(f.default_factory())}"
    return "required"


def _format_cli(value: Any) -> str:
    """A value spelled the way it would be typed on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)) and value:
        return ",".join(_format_cli(item) for item in value)
    if value in ("", (), []):
        return '""'
    return str(value)


# ---------------------------------------------------------------------------------------------
# Writing configs out: TOML text and plain dicts


def to_toml(configs: Mapping[str, Any], *, comments: bool = False) -> str:
    """TOML text with one [section] table per config; load_config reads it back identically.

    None is written as the string "none", which Optional fields read back as None (TOML has
    no null). With comments=True each key is preceded by its field doc as # comments.
    """
    blocks = []
    for name, config in configs.items():
        _require_instance(name, config)
        docs = _field_docs(type(config)) if comments else {}
        lines = [f"[{_toml_key(name)}]"]
        for f in dataclasses.fields(config):
            if not f.init:
                continue
            lines += [f"# {line}".rstrip() for line in docs.get(f.name, "").splitlines()]
            lines.append(f"{_toml_key(f.name)} = {_toml_value(getattr(config, f.name))}")
        blocks.append("\n".join(lines) + "\n")
    return "\n".join(blocks)


def _require_instance(name: str, config: Any) -> None:
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config {name!r} must be a dataclass instance, got {config!r}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY_RE.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    out = []
    for char in text:
        if char in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:  # other control characters must be escaped
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_value(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return float.__repr__(value)  # shortest text that reads back to the same float
    if isinstance(value, PurePath):
        return _toml_string(str(value))
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write a {type(value).__name__} ({value!r}) as a TOML config value")


def configs_to_dict(configs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Plain JSON-able data {section: {key: value}}: tuples become lists, paths strings."""
    out = {}
    for name, config in configs.items():
        _require_instance(name, config)
        out[name] = {f.name: _to_plain(getattr(config, f.name)) for f in dataclasses.fields(config) if f.init}
    return out


def _to_plain(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_to_plain(item) for item in value]
    return value


def configs_from_dict(
    sections: Mapping[str, type], data: Mapping[str, Any], *, allow_extra_sections: bool = False
) -> dict[str, Any]:
    """Rebuild configs from configs_to_dict data; missing sections and keys take defaults.

    allow_extra_sections=True skips sections of `data` not in `sections` (e.g. rebuilding only
    the model from a checkpoint that stores every section).
    """
    _check_sections(sections)
    return _build(sections, [_values_from_data(sections, data, "", allow_extra_sections)])


def save_config(configs: Mapping[str, Any], path: str | Path) -> Path:
    """Write configs to a .toml file (or .json, by suffix) that load_config reads back."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        text = json.dumps(configs_to_dict(configs), indent=2) + "\n"
    elif path.suffix.lower() == ".toml":
        text = to_toml(configs)
    else:
        raise ValueError(f"config file {path} must end in .toml or .json")
    path.write_text(text, encoding="utf-8")
    return path
