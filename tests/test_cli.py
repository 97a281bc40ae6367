"""The one config and command-line path: defaults < base < file < flags, checked keys and types."""

import json
from pathlib import Path

import pytest

from minigpt import cli, config_io
from minigpt.config import (
    BenchConfig,
    ExportConfig,
    ModelConfig,
    ParamsConfig,
    PrepareConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
)
from minigpt.config_io import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def parse(argv, cls=RunConfig, **kw):
    return cli.parse(cls, argv, prog="test", **kw)


def write(tmp_path, text, name="c.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_without_file_or_flags():
    assert parse([]) == RunConfig()


def test_precedence_flags_over_file_over_base_over_defaults(tmp_path):
    path = write(tmp_path, "[train]\nlr = 2e-3\nmax_iters = 50\n[model]\nn_layer = 3\n")
    base = {"train": {"lr": 5e-3, "batch_size": 7, "min_lr": 1e-5}}
    cfg = parse([path, "--train.max_iters=9"], base=base)
    assert (cfg.train.lr, cfg.train.max_iters, cfg.train.batch_size, cfg.model.n_layer) == (2e-3, 9, 7, 3)
    assert cfg.train.warmup_iters == TrainConfig().warmup_iters  # untouched keys keep their defaults


def test_flag_forms_and_later_flag_wins(tmp_path):
    cfg = parse(["--model.n_layer", "3", "--model.n-embd=64", "--model.n_layer=5", "--train.compile"])
    assert (cfg.model.n_layer, cfg.model.n_embd, cfg.train.compile) == (5, 64, True)
    assert parse(["--log.no_tensorboard"]).log.tensorboard is False


def test_json_config_file(tmp_path):
    path = write(tmp_path, json.dumps({"model": {"n_head": 8, "d_head": None}}), "c.json")
    assert parse([path]).model.n_head == 8


def test_unknown_flag_suggests_and_lists_valid_keys():
    with pytest.raises(ConfigError, match=r"unknown option --model\.n_layr \(did you mean --model\.n_layer\?\); "
                                          r"valid keys of \[model\]: vocab_size, block_size, n_layer"):
        parse(["--model.n_layr=3"])
    with pytest.raises(ConfigError, match=r"did you mean --train\.lr\?.*valid sections: data, log, model, train"):
        parse(["--trian.lr=1"])
    with pytest.raises(ConfigError, match=r"unknown option --n_layer \(did you mean --model\.n_layer\?\)"):
        parse(["--n_layer=3"])


def test_unknown_file_key_suggests_and_names_the_file(tmp_path):
    path = write(tmp_path, "[model]\nnlayer = 3\n")
    with pytest.raises(ConfigError, match=rf"unknown key model\.nlayer in {path} \(did you mean model\.n_layer\?\)"):
        parse([path])
    path = write(tmp_path, "[train]\nn_layer = 3\n")  # the right key in the wrong section
    with pytest.raises(ConfigError, match=r"did you mean model\.n_layer\?"):
        parse([path])
    path = write(tmp_path, "[modle]\nn_layer = 3\n")
    with pytest.raises(ConfigError, match=r"unknown key modle .*valid sections: data, log, model, train"):
        parse([path])


@pytest.mark.parametrize("flag, fragment", [
    ("--model.n_layer=x", "--model.n_layer"),
    ("--model.attn_impl=fast", "'fast'"),
    ("--train.lr=abc", "--train.lr"),
    ("--train.compile=yes", "--train.compile is a switch"),
    ("--model.n_layer=0", "model.n_layer must be a positive integer"),
    ("--train.min_lr=1", "train.min_lr must be in [0, train.lr"),
])  # fmt: skip
def test_bad_flag_values_are_one_line_errors(flag, fragment):
    with pytest.raises(ConfigError) as e:
        parse([flag])
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("toml, fragment", [
    ("[model]\nn_layer = 'four'", "model.n_layer in"),
    ("[model]\nn_layer = 2.5", "expected int"),
    ("[model]\ndropout = true", "expected float"),
    ("[train]\ncompile = 1", "expected bool"),
    ("[model]\nattn_impl = 'fast'", "expected one of manual, sdpa"),
    ("[train]\nlr = -1.0", "train.lr must be positive"),
    ("model = 3", "must be a table"),
])  # fmt: skip
def test_bad_file_values_are_rejected(tmp_path, toml, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        parse([write(tmp_path, toml)])
    assert fragment in str(e.value), str(e.value)


def test_file_values_convert_by_type(tmp_path):
    path = write(tmp_path, "[model]\ndropout = 0\nd_head = 'none'\n[train]\nlr = 1\nmin_lr = 0\n")
    cfg = parse([path])
    assert cfg.model.dropout == 0 and cfg.model.d_head is None and cfg.train.lr == 1


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        parse([str(tmp_path / "missing.toml")])
    with pytest.raises(ConfigError, match=r"is not valid TOML.*line 1"):
        parse([write(tmp_path, "[model\n")])
    with pytest.raises(ConfigError, match="is not valid JSON"):
        parse([write(tmp_path, "{", "c.json")])
    with pytest.raises(ConfigError, match="must end in .toml or .json"):
        config_io.read_file(tmp_path / "c.yaml")
    with pytest.raises(ConfigError, match="give one config file"):
        parse([write(tmp_path, ""), write(tmp_path, "", "d.toml")])


def test_preset_in_file_then_keys_override(tmp_path):
    cfg = parse([write(tmp_path, "[model]\npreset = 'gpt2'\nn_layer = 2\n")])
    assert cfg.model == ModelConfig.from_preset("gpt2", n_layer=2)


def test_preset_flag_replaces_lower_layers_but_keeps_later_flags(tmp_path):
    path = write(tmp_path, "[model]\nn_layer = 3\nn_embd = 96\n")
    cfg = parse([path, "--model.preset=gpt2", "--model.n_layer=2"])
    assert cfg.model == ModelConfig.from_preset("gpt2", n_layer=2)  # the file's n_embd is gone with the preset
    with pytest.raises(ConfigError, match="model.preset='gpt5' is unknown; valid presets: micro, nano"):
        parse(["--model.preset=gpt5"])


def test_saved_config_reloads_equal(tmp_path):
    cfg = parse(["--model.preset=gpt3-small", "--model.attn_window=128", "--train.lr=1e-4", "--train.min_lr=1e-5"])
    path = config_io.save(cfg, tmp_path / "config.toml")
    assert parse([str(path)]) == cfg
    assert config_io.from_dict(RunConfig, config_io.read_file(path)) == cfg
    assert 'd_ff = "none"' in path.read_text()  # TOML has no null


def test_flat_config_classes(tmp_path):
    cfg = parse(["--top-k", "5", "--no_kv_cache", "--prompt", "hi"], SampleConfig)
    assert (cfg.top_k, cfg.kv_cache, cfg.prompt) == (5, False, "hi")
    with pytest.raises(ConfigError, match="give one of ckpt, run and hf, not several"):
        parse(["--ckpt", "a", "--run", "b"], SampleConfig)
    bench = parse(["generate", "--model.n_layer", "2", "--block_sizes", "64", "128"], BenchConfig)
    assert bench.what == "generate" and bench.block_sizes == (64, 128) and bench.model.preset == "nano"


def test_ignored_file_tables(tmp_path):
    path = write(tmp_path, "[model]\nn_layer = 3\n[train]\nlr = 1.0\n")
    assert parse([path], BenchConfig, ignore=("train",)).model.n_layer == 3
    with pytest.raises(ConfigError, match="unknown key train"):
        parse([path], BenchConfig)


def test_help_lists_fields_with_their_docs(capsys):
    with pytest.raises(SystemExit) as e:
        parse(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for text in ("--model.n_layer", "Number of transformer blocks", "--train.lr", "--log.no_tensorboard"):
        assert text in out


def test_literal_fields_are_checked_when_built_in_python():
    with pytest.raises(ValueError, match=r"train\.device must be 'auto', 'cpu', 'cuda' or 'mps' \(got 'tpu'\)"):
        TrainConfig(device="tpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^what must be 'train', .* or 'all' \(got 'x'\)"):
        BenchConfig(what="x")  # type: ignore[arg-type]


def test_none_is_spelled_as_in_config_files():
    from minigpt.config import SampleConfig

    for argv in (["--top_k", "none"], ["--top_k=none"], ["--top-k", "None"]):
        assert cli.parse(SampleConfig, ["--top_k", "5", *argv], prog="x").top_k is None
    assert cli.parse(RunConfig, ["--data.path", "none"], prog="x").data.path == "none"  # a str field keeps it


@pytest.mark.parametrize("cls", [RunConfig, SampleConfig, PrepareConfig, ParamsConfig, BenchConfig, ExportConfig])
def test_help_gives_each_default_once(cls, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # one column of boxes
    with pytest.raises(SystemExit):
        parse(["--help"], cls)
    entries = []  # each setting's flag and text, its wrapped lines joined
    for line in capsys.readouterr().out.lower().splitlines():
        line = line.strip(" │")
        if line.startswith("-"):
            entries.append(line)
        elif entries and line and line[0] not in "╭╰─":
            entries[-1] += " " + line
    assert sum("(default:" in entry for entry in entries) >= 3
    assert [e for e in entries if e.count("default:") > 1] == []  # e.g. "(default: a newline). (default: none)"


def test_none_round_trips_through_config_toml_even_over_a_preset(tmp_path):
    # gpt3-small's preset sets d_head = 64: leaving the key out would bring it back, "none" keeps it unset
    cfg = parse(["--model.preset=gpt3-small", "--model.d_head=none", "--data.hf_config=none"])
    assert cfg.model.d_head is None and cfg.model.preset == "gpt3-small"
    text = config_io.save(cfg, tmp_path / "config.toml").read_text()
    assert text.startswith(config_io.NONE_NOTE) and text.splitlines()[0].startswith("# ")
    assert 'd_head = "none"' in text and 'hf_config = "none"' in text
    assert parse([str(tmp_path / "config.toml")]) == cfg
    assert config_io.from_dict(RunConfig, config_io.read_file(tmp_path / "config.toml")).model.d_head is None
    # after a config file too: the file is taken out of argv before each value is matched to its flag
    cfg = parse([str(tmp_path / "config.toml"), "--data.hf_dataset", "x/y", "--data.hf_config", "none"])
    assert cfg.data.hf_config is None and cfg.data.hf_dataset == "x/y"


def test_gpt2_doc_names_the_context_the_default_runs_crop_to():
    # fine-tuning GPT-2 keeps model.block_size of the run's config: the default runs' own contexts
    from minigpt.run import DEFAULT_RUNS

    doc = " ".join((ROOT / "docs/gpt2.md").read_text().split())
    cpu, gpu = (parse([], base=config_io.read_file(DEFAULT_RUNS[kind])).model.block_size for kind in ("cpu", "gpu"))
    assert f"the default run's own context: {cpu} on a CPU, {gpu} with a GPU" in doc


def test_parsed_flags_lay_over_another_base_as_typed(tmp_path):
    """parse_args keeps the file and the flags as layers: over another base (a checkpoint's settings), the
    flags typed win even where they equal the first base, and a preset flag starts its section over."""
    path = write(tmp_path, "[train]\nlr = 2e-3\n")
    argv = [path, "--train.batch_size=32", "--model.no_bias", "--model.preset=micro", "--model.n_layer=3"]
    args = cli.parse_args(RunConfig, argv, prog="test")
    assert args.file == path and args.config == parse(argv)
    other = {"model": {"n_embd": 64, "bias": True}, "train": {"batch_size": 8, "lr": 5e-3, "max_iters": 9}}
    cfg = args.over(other, "other.toml")
    assert (cfg.train.batch_size, cfg.train.lr, cfg.train.max_iters) == (32, 2e-3, 9)  # flag, file, base
    assert cfg.model == ModelConfig.from_preset("micro", n_layer=3, bias=False)
    with pytest.raises(ConfigError, match=r"train.min_lr must be in \[0, train.lr=0.0001\]"):
        cli.parse_args(RunConfig, ["--train.min_lr=5e-4"], prog="test").over({"train": {"lr": 1e-4}}, "x")
