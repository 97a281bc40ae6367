"""Tests for minigpt.config: files, overrides, type parsing, errors, help and round-trips."""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

import pytest

import minigpt
from minigpt.config import (
    ConfigError,
    configs_from_dict,
    configs_to_dict,
    field_docs,
    format_help,
    load_config,
    save_config,
    split_argv,
    to_toml,
)


@dataclass(frozen=True)
class ModelCfg:
    """Shape of the network."""

    n_layer: int = 12
    """Number of transformer blocks."""
    n_embd: int = 768
    """Embedding width."""
    dropout: float = 0.0
    """Dropout probability
    (second line is not shown in --help)."""
    bias: bool = True
    """Use a bias in Linear layers."""
    d_head: int | None = None
    """Per-head size; None derives n_embd // n_head."""

    def __post_init__(self) -> None:
        if self.n_layer < 1:
            raise ValueError(f"n_layer must be at least 1, got {self.n_layer}; set --model.n_layer")

    @classmethod
    def from_preset(cls, name: str) -> ModelCfg:
        presets = {"tiny": dict(n_layer=2, n_embd=16, bias=False), "gpt2": dict(n_layer=12, n_embd=768)}
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {', '.join(presets)}")
        return cls(**presets[name])


@dataclass(frozen=True)
class TrainCfg:
    lr: float = 1e-3
    """Peak learning rate after warmup."""
    max_iters: int = 5000
    """Optimizer steps to run."""
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    """Where to train; auto picks CUDA, then MPS, then CPU."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    eval_at: list[int] = field(default_factory=lambda: [100, 200])
    """Steps at which to evaluate."""
    out_dir: Path = Path("out")
    """Where checkpoints go."""
    name: str = "run"
    """Run name."""
    tags: tuple[str, ...] = ()
    """Free-form labels."""
    grad_clip: Optional[float] = 1.0
    """Clip gradient norm to this; none disables clipping."""
    precision: Literal[16, 32] = 32
    """Float bits."""
    undocumented: int = 0


SECTIONS = {"model": ModelCfg, "train": TrainCfg}


def write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args, **kwargs) -> str:
    """The message of the ConfigError load_config raises; it must be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(SECTIONS, *args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# --- precedence and sources -------------------------------------------------------------------


def test_defaults_without_file_or_overrides():
    assert load_config(SECTIONS) == {"model": ModelCfg(), "train": TrainCfg()}


def test_precedence_cli_over_file_over_defaults(tmp_path):
    path = write(tmp_path, "[train]\nlr = 3e-4\nmax_iters = 100\n\n[model]\nn_layer = 4\n")
    configs = load_config(SECTIONS, path, ["--train.max_iters=200", "--model.n_embd", "64"])
    assert configs["train"] == TrainCfg(lr=3e-4, max_iters=200)
    assert configs["model"] == ModelCfg(n_layer=4, n_embd=64)
    assert list(configs) == ["model", "train"]


def test_later_override_wins():
    configs = load_config(SECTIONS, None, ["--train.lr=1", "--train.lr=2"])
    assert configs["train"].lr == 2.0


def test_base_layer_sits_below_file_and_cli(tmp_path):
    base = configs_to_dict({"train": TrainCfg(lr=0.5, max_iters=7, name="ckpt")})
    path = write(tmp_path, "[train]\nmax_iters = 8\n")
    configs = load_config(SECTIONS, path, ["--train.name=cli"], base=base)
    assert configs["train"] == TrainCfg(lr=0.5, max_iters=8, name="cli")


def test_json_config_file(tmp_path):
    path = write(tmp_path, json.dumps({"train": {"lr": 0.1, "grad_clip": None, "tags": ["a", "b"]}}), "c.json")
    assert load_config(SECTIONS, path)["train"] == TrainCfg(lr=0.1, grad_clip=None, tags=("a", "b"))


def test_override_forms():
    overrides = ["--train.name", "x", "--train.compile", "--model.bias", "no", "train.max_iters=3"]
    configs = load_config(SECTIONS, None, overrides)
    assert configs["train"] == TrainCfg(name="x", compile=True, max_iters=3)
    assert configs["model"] == ModelCfg(bias=False)
    assert load_config(SECTIONS, None, ["--train.lr", "-1e-3"])["train"].lr == -1e-3


def test_bare_flag_needs_bool():
    assert "needs a value" in error_of(None, ["--train.lr"])


def test_split_argv():
    argv = ["configs/x.toml", "--train.lr", "3e-4", "--resume", "--model.n_layer=4", "--train.compile",
            "--help", "--out", "o.json"]
    path, overrides, rest = split_argv(argv)
    assert path == "configs/x.toml"
    assert overrides == ["--train.lr=3e-4", "--model.n_layer=4", "--train.compile"]
    assert rest == ["--resume", "--help", "--out", "o.json"]
    assert split_argv([]) == (None, [], [])
    # what split_argv returns feeds load_config
    assert load_config(SECTIONS, None, overrides)["train"].compile is True


# --- unknown names ----------------------------------------------------------------------------


def test_unknown_cli_key_suggests_and_lists_valid_keys():
    message = error_of(None, ["--train.lrr=1"])
    assert "--train.lrr" in message and "did you mean --train.lr?" in message
    assert "valid keys for [train]: lr, max_iters, device" in message


def test_unknown_file_key_suggests(tmp_path):
    path = write(tmp_path, "[model]\nn_layers = 4\n")
    with pytest.raises(ConfigError, match=r"did you mean 'model.n_layer'\?"):
        load_config(SECTIONS, path)


def test_key_in_wrong_section_points_to_right_one(tmp_path):
    assert "did you mean --model.n_layer?" in error_of(None, ["--train.n_layer=2"])
    assert "did you mean 'train.lr'?" in error_of(write(tmp_path, "[model]\nlr = 1.0\n"))


def test_unknown_section(tmp_path):
    message = error_of(write(tmp_path, "[trian]\nlr = 1.0\n"))
    assert "unknown section [trian]" in message and "did you mean [train]?" in message
    assert "valid sections: model, train" in message
    message = error_of(None, ["--modle.n_layer=2"])
    assert message.startswith("unknown option --modle.n_layer: no section [modle]")
    assert "did you mean --model.n_layer?" in message


def test_undotted_override_and_top_level_key(tmp_path):
    assert "did you mean --train.lr?" in error_of(None, ["--lr=1"])
    assert "put it under [train]" in error_of(write(tmp_path, "lr = 1.0\n"))
    assert "unexpected argument" in error_of(None, ["lr"])


def test_no_suggestion_when_nothing_is_close():
    message = error_of(None, ["--train.zzzz=1"])
    assert "did you mean" not in message and "valid keys for [train]" in message


# --- type parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("--model.n_layer=4", "n_layer", 4),
        ("--model.n_layer=1_000", "n_layer", 1000),
        ("--model.n_layer=+3", "n_layer", 3),
        ("--model.dropout=0.1", "dropout", 0.1),
        ("--model.dropout=1", "dropout", 1.0),
        ("--train.lr=3e-4", "lr", 3e-4),
        ("--train.lr=inf", "lr", math.inf),
        ("--model.bias=FALSE", "bias", False),
        ("--model.bias=Yes", "bias", True),
        ("--model.bias=0", "bias", False),
        ("--model.bias=on", "bias", True),
        ("--train.name=hello world", "name", "hello world"),
        ("--train.name=", "name", ""),
        ("--train.device=cuda", "device", "cuda"),
        ("--train.precision=16", "precision", 16),
        ("--model.d_head=none", "d_head", None),
        ("--model.d_head=NULL", "d_head", None),
        ("--model.d_head=32", "d_head", 32),
        ("--train.grad_clip=none", "grad_clip", None),
        ("--train.betas=0.8,0.99", "betas", (0.8, 0.99)),
        ("--train.betas=[0.8, 0.99]", "betas", (0.8, 0.99)),
        ("--train.eval_at=1,2,3", "eval_at", [1, 2, 3]),
        ("--train.eval_at=", "eval_at", []),
        ("--train.tags=a,b", "tags", ("a", "b")),
        ("--train.out_dir=runs/x", "out_dir", Path("runs/x")),
    ],
)
def test_cli_values_parse_by_declared_type(override, key, expected):
    configs = load_config(SECTIONS, None, [override])
    value = getattr(configs[override[2:].split(".")[0]], key)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("--model.n_layer=3.5", "expected an int, got '3.5'"),
        ("--model.n_layer=4e3", "expected an int"),
        ("--model.n_layer=abc", "expected an int"),
        ("--model.n_layer=", "expected an int"),
        ("--train.lr=fast", "expected a float, got 'fast'"),
        ("--model.bias=maybe", "expected a bool"),
        ("--model.bias=2", "expected a bool"),
        ("--train.device=gpu", "expected one of auto, cpu, cuda, mps, got 'gpu' (did you mean 'cpu'?)"),
        ("--train.device=none", "expected one of auto, cpu, cuda, mps"),
        ("--train.precision=8", "expected one of 16, 32"),
        ("--model.d_head=x", "expected an int, got 'x'; none is also accepted"),
        ("--train.betas=0.9", "expected 2 items"),
        ("--train.betas=0.9,x", "item 2: expected a float, got 'x'"),
        ("--train.eval_at=1,2.5", "item 2: expected an int"),
    ],
)
def test_bad_cli_values_are_rejected(override, fragment):
    message = error_of(None, [override])
    assert message.startswith(override.split("=")[0] + ":")
    assert fragment in message


@pytest.mark.parametrize(
    "toml, fragment",
    [
        ('[model]\nn_layer = "4"', "model.n_layer in {path}: expected an int, got the string '4'"),
        ("[model]\nn_layer = 4.0", "expected an int, got the float 4.0"),
        ("[model]\nbias = 1", "expected a bool, got the int 1"),
        ("[model]\ndropout = true", "expected a float, got the bool true"),
        ("[train]\nname = 3", "expected a string, got the int 3"),
        ('[train]\ndevice = "gpu"', "expected one of auto, cpu, cuda, mps, got the string 'gpu'"),
        ('[train]\nprecision = "16"', "expected one of 16, 32"),
        ("[train]\ntags = 'a,b'", "expected a list of str, got the string 'a,b'"),
        ("[train]\ntags = ['a', 1]", "item 2: expected a string, got the int 1"),
        ("[train]\nbetas = [0.9]", "expected 2 items"),
        ("[train]\nout_dir = 5", "expected a path"),
        ("[train]\nlr = {a = 1}", "expected a float, got a table"),
        ("train = 3", "must be a table [train]"),
    ],
)
def test_bad_file_values_are_rejected(tmp_path, toml, fragment):
    path = write(tmp_path, toml + "\n")
    assert fragment.format(path=path) in error_of(path)


def test_file_values_are_converted(tmp_path):
    text = '[train]\nlr = 1\nbetas = [1, 0.5]\nout_dir = "x/y"\ngrad_clip = "none"\nprecision = 16\n'
    train = load_config(SECTIONS, write(tmp_path, text))["train"]
    assert train == TrainCfg(lr=1.0, betas=(1.0, 0.5), out_dir=Path("x/y"), grad_clip=None, precision=16)
    assert type(train.lr) is float and type(train.betas) is tuple


# --- files ------------------------------------------------------------------------------------


def test_missing_file_names_the_path(tmp_path):
    assert error_of(tmp_path / "nope.toml") == f"config file not found: {tmp_path / 'nope.toml'}"


def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "[train]\nlr = = 3\n")
    message = error_of(path)
    assert message.startswith(f"{path}: invalid TOML:") and "line 2" in message


def test_bad_json_and_bad_suffix(tmp_path):
    assert "invalid JSON" in error_of(write(tmp_path, "{", "c.json"))
    assert "must end in .toml or .json" in error_of(write(tmp_path, "", "c.yaml"))


# --- presets and validation -------------------------------------------------------------------


def test_preset_from_file_then_overrides(tmp_path):
    path = write(tmp_path, '[model]\npreset = "tiny"\nn_embd = 32\n')
    assert load_config(SECTIONS, path)["model"] == ModelCfg(n_layer=2, n_embd=32, bias=False)
    configs = load_config(SECTIONS, path, ["--model.n_layer=3"])
    assert configs["model"] == ModelCfg(n_layer=3, n_embd=32, bias=False)


def test_preset_from_cli_keeps_other_file_keys(tmp_path):
    path = write(tmp_path, '[model]\npreset = "gpt2"\nn_embd = 32\n')
    assert load_config(SECTIONS, path, ["--model.preset=tiny"])["model"] == ModelCfg(n_layer=2, n_embd=32, bias=False)
    assert load_config(SECTIONS, None, ["--model.preset", "tiny"])["model"] == ModelCfg.from_preset("tiny")


def test_unknown_preset_error_comes_through():
    with pytest.raises(ValueError, match="model.preset: unknown preset 'huge'; choose from tiny, gpt2"):
        load_config(SECTIONS, None, ["--model.preset=huge"])


def test_preset_only_for_classes_with_from_preset():
    assert "unknown option --train.preset" in error_of(None, ["--train.preset=x"])


def test_post_init_error_comes_through_with_section():
    message = error_of(None, ["--model.n_layer=0"])
    assert message == "model: n_layer must be at least 1, got 0; set --model.n_layer"


@dataclass(frozen=True)
class NeedsPath:
    data: Path
    """Where the data lives."""
    seed: int = 1


def test_required_field():
    with pytest.raises(ConfigError, match=r"\[data\] needs a value for data.*--data.data=VALUE"):
        load_config({"data": NeedsPath})
    assert load_config({"data": NeedsPath}, None, ["--data.data=x"])["data"] == NeedsPath(Path("x"))
    assert "(required)" in format_help({"data": NeedsPath})


# --- round trips ------------------------------------------------------------------------------


TRICKY = {
    "model": ModelCfg(n_layer=3, dropout=1e-12, bias=False, d_head=None),
    "train": TrainCfg(
        lr=0.1 + 0.2,
        max_iters=-7,
        device="mps",
        compile=True,
        betas=(0.0, math.inf),
        eval_at=[],
        out_dir=Path("runs/a b"),
        name='quote " back \\ tab \t newline \n bell \x07 del \x7f unicode é 漢',
        tags=("none", "x,y", ""),
        grad_clip=None,
        precision=16,
    ),
}


def test_toml_round_trip(tmp_path):
    text = to_toml(TRICKY)
    assert text.startswith("[model]\nn_layer = 3\n")
    path = write(tmp_path, text)
    assert load_config(SECTIONS, path) == TRICKY
    assert load_config(SECTIONS, write(tmp_path, to_toml(TRICKY, comments=True))) == TRICKY
    assert load_config(SECTIONS, write(tmp_path, to_toml(load_config(SECTIONS)))) == load_config(SECTIONS)


def test_toml_with_comments_documents_keys():
    text = to_toml({"train": TrainCfg()}, comments=True)
    assert "# Peak learning rate after warmup.\nlr = 0.001\n" in text


def test_nan_round_trips(tmp_path):
    path = write(tmp_path, to_toml({"train": TrainCfg(lr=math.nan)}))
    assert math.isnan(load_config(SECTIONS, path)["train"].lr)


def test_dict_round_trip_through_json():
    data = configs_to_dict(TRICKY)
    assert data["train"]["out_dir"] == "runs/a b" and data["train"]["betas"] == [0.0, math.inf]
    assert configs_from_dict(SECTIONS, json.loads(json.dumps(data))) == TRICKY


def test_configs_from_dict_is_strict_unless_told():
    data = configs_to_dict({"model": ModelCfg(n_layer=2), "extra": TrainCfg()})
    with pytest.raises(ConfigError, match=r"unknown section \[extra\]"):
        configs_from_dict({"model": ModelCfg}, data)
    assert configs_from_dict({"model": ModelCfg}, data, allow_extra_sections=True) == {"model": ModelCfg(n_layer=2)}
    with pytest.raises(ConfigError, match=r"did you mean 'model.n_layer'"):
        configs_from_dict(SECTIONS, {"model": {"n_layers": 2}})


@pytest.mark.parametrize("suffix", [".toml", ".json"])
def test_save_config_round_trip(tmp_path, suffix):
    path = save_config(TRICKY, tmp_path / f"config{suffix}")
    assert load_config(SECTIONS, path) == TRICKY


# --- docs and help ----------------------------------------------------------------------------


def test_field_docs():
    docs = field_docs(TrainCfg)
    assert docs["lr"] == "Peak learning rate after warmup."
    assert "undocumented" not in docs
    assert field_docs(ModelCfg)["dropout"] == "Dropout probability\n(second line is not shown in --help)."


@dataclass(frozen=True)
class BaseCfg:
    a: int = 1
    """From the base."""
    b: int = 2
    """Base doc for b."""


@dataclass(frozen=True)
class ChildCfg(BaseCfg):
    b: int = 3
    """Child doc for b."""
    c: str = "x"
    """Only in the child."""


def test_field_docs_inherit():
    assert field_docs(ChildCfg) == {"a": "From the base.", "b": "Child doc for b.", "c": "Only in the child."}


def test_help_lists_every_key_type_default_and_doc():
    text = format_help(SECTIONS, prog="train.py")
    assert text.startswith("usage: train.py [CONFIG.toml]")
    assert "[model]  Shape of the network." in text
    assert "[train]\n" in text  # no class docstring, no summary
    for name, cls in SECTIONS.items():
        docs = field_docs(cls)
        for f in dataclasses.fields(cls):
            assert f"--{name}.{f.name} " in text
            if f.name in docs:
                assert docs[f.name].splitlines()[0] in text
    for fragment in [
        "--train.lr float", "(default: 0.001)", "--train.device {auto,cpu,cuda,mps}", "(default: auto)",
        "--model.d_head int | none", "(default: none)", "--train.betas float,float", "(default: 0.9,0.95)",
        "--train.tags str,...", '(default: "")', "--train.eval_at int,...", "(default: 100,200)",
        "--train.out_dir path", "(default: out)", "--model.bias bool", "(default: true)",
        "--model.preset str", "ModelCfg.from_preset(NAME)",
    ]:
        assert fragment in text, fragment
    assert "second line" not in text
    assert text.index("[model]") < text.index("--model.n_layer") < text.index("[train]") < text.index("--train.lr")


def test_classes_without_source_still_load():
    made = dataclasses.make_dataclass("Made", [("a", int, field(default=1))], frozen=True)
    assert field_docs(made) == {}
    assert load_config({"m": made}, None, ["--m.a=2"])["m"] == made(a=2)
    assert "--m.a int  (default: 1)" in format_help({"m": made})


# --- programmer errors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Unsupported:
    table: dict[str, int] = field(default_factory=dict)


def test_unsupported_types_and_non_dataclasses_are_type_errors():
    with pytest.raises(TypeError, match=r"Unsupported.table: type .* is not supported"):
        load_config({"x": Unsupported})
    with pytest.raises(TypeError, match="must be dataclass types"):
        load_config({"x": dict})
    with pytest.raises(TypeError, match="sequence of strings"):
        load_config(SECTIONS, None, "--train.lr=1")


# --- the project's own config classes ---------------------------------------------------------


def _project_config_classes() -> list[type]:
    """Every *Config dataclass defined in a minigpt module that imports cleanly."""
    classes = []
    for info in pkgutil.iter_modules(minigpt.__path__):
        try:
            module = importlib.import_module(f"minigpt.{info.name}")
        except Exception:  # a module being written elsewhere; its own tests report it
            continue
        for value in vars(module).values():
            if (isinstance(value, type) and dataclasses.is_dataclass(value) and value.__name__.endswith("Config")
                    and value.__module__ == module.__name__):
                classes.append(value)
    return classes


@pytest.mark.parametrize("cls", _project_config_classes() or [None], ids=lambda c: getattr(c, "__name__", "none"))
def test_project_configs_are_loadable_documented_and_round_trip(cls, tmp_path):
    if cls is None:
        pytest.skip("no *Config dataclasses in minigpt yet")
    sections = {"s": cls}
    defaults = load_config(sections)  # every field has a supported type and a default
    assert load_config(sections, write(tmp_path, to_toml(defaults))) == defaults
    assert configs_from_dict(sections, json.loads(json.dumps(configs_to_dict(defaults)))) == defaults
    undocumented = [f.name for f in dataclasses.fields(cls) if f.init and f.name not in field_docs(cls)]
    assert not undocumented, f"{cls.__name__} fields without a docstring: {undocumented}"


def test_preset_in_a_higher_layer_replaces_lower_layers_values(tmp_path):
    from minigpt.model import ModelConfig

    path = tmp_path / "run.toml"
    path.write_text('[model]\npreset = "gpt2"\ndropout = 0.1\n')
    base = {"model": {"n_layer": 4, "block_size": 64}}
    model = load_config({"model": ModelConfig}, path, base=base)["model"]
    assert model == ModelConfig.from_preset("gpt2", dropout=0.1)
    model = load_config({"model": ModelConfig}, None, ["--model.preset=nano", "--model.n_layer=3"], base=base)["model"]
    assert model == ModelConfig.from_preset("nano", n_layer=3)
    # without a preset above it, the base layer applies as usual
    assert load_config({"model": ModelConfig}, None, [], base=base)["model"].block_size == 64


def test_post_init_error_naming_its_key_is_not_prefixed_twice():
    from minigpt.model import ModelConfig

    with pytest.raises(ConfigError) as info:
        load_config({"model": ModelConfig}, None, ["--model.n_head=5"])
    assert str(info.value).startswith("model.n_embd=128 is not divisible by model.n_head=5")
