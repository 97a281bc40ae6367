"""The parameter counter against built models and against the GPT-3 paper; its command line."""

import subprocess
import sys

import pytest

from minigpt import cli
from minigpt.config import RunConfig
from minigpt.model import GPT, ModelConfig, load_presets
from minigpt.params import count_params, flops_per_token, format_param_table, training_memory
from minigpt.params_cli import main
from minigpt.tables import human, text_table

CONFIGS = [
    ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16),
    ModelConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=16, tie_weights=False),
    ModelConfig(vocab_size=97, block_size=32, n_layer=3, n_head=3, n_embd=24, d_head=10, bias=False),
    ModelConfig(vocab_size=50, block_size=16, n_layer=1, n_head=4, n_embd=32, d_ff=40, tie_weights=False),
    ModelConfig(vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, attn_score="additive"),
    # the switches of "A CPU speedrun" that add or remove parameters: QK-norm gains, value embeddings, no wpe
    ModelConfig(
        vocab_size=20, block_size=16, n_layer=2, n_head=2, n_embd=16, qk_norm=True, value_embeds=True, pos_emb="rotary"
    ),
    ModelConfig.from_preset("nano"),
]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_count_equals_numel(cfg):
    model = GPT(cfg)
    c = count_params(cfg)
    assert c["total"] == sum(p.numel() for p in model.parameters())
    assert c["token_embedding"] == model.wte.weight.numel()
    assert c["layer.total"] == sum(p.numel() for p in model.h[0].parameters())
    assert c["layer.mlp_fc"] == sum(p.numel() for p in model.h[0].mlp.c_fc.parameters())
    assert c["layer.biases"] == sum(p.numel() for n, p in model.h[0].named_parameters() if n.endswith(".bias"))
    assert c["embedding"] + c["non_embedding"] == c["total"]


@pytest.mark.parametrize("cfg", CONFIGS)
def test_heads_own_all_of_attention_but_the_output_bias(cfg):
    attn = GPT(cfg).h[0].attn
    c = count_params(cfg)
    out_bias = attn.c_proj.bias.numel() if attn.c_proj.bias is not None else 0
    assert cfg.n_head * (c["head.weights"] + c["head.biases"]) + out_bias == sum(p.numel() for p in attn.parameters())
    biases = sum(p.numel() for n, p in attn.named_parameters() if n.endswith("bias"))
    assert cfg.n_head * c["head.biases"] + out_bias == biases


def test_one_gpt3_175b_head_is_the_papers_weights_plus_its_biases():
    # Brown et al. (2020): d_model 12,288, d_head 128; Q, K, V are 12,288 x 128 each, the output 128 x 12,288
    cfg = ModelConfig.from_preset("gpt3-175b")
    c = count_params(cfg)
    assert c["head.weights"] == 3 * 12_288 * 128 + 128 * 12_288 == 6_291_456
    assert c["head.biases"] == 3 * 128 == 384
    table = format_param_table(cfg)
    assert "one head owns 6,291,456 weights" in table and "384 biases" in table
    no_bias = count_params(cfg.replace(bias=False))
    assert no_bias["head.weights"] == 6_291_456 and no_bias["head.biases"] == 0


def test_gpt2_small_is_124m():
    assert count_params(ModelConfig.from_preset("gpt2"))["total"] == 124_439_808


@pytest.mark.parametrize("name", [n for n in load_presets() if n.startswith("gpt3-")])
def test_gpt3_presets_match_paper_within_two_percent(name):
    entry = load_presets()[name]
    total = count_params(ModelConfig.from_preset(name))["total"]
    assert abs(total - entry["published_params"]) / entry["published_params"] < 0.02


def test_gpt3_head_sizing_is_consistent():
    for name in [n for n in load_presets() if n.startswith("gpt3-")]:
        cfg = ModelConfig.from_preset(name)
        assert cfg.n_head * cfg.head_size == cfg.n_embd, name
    # the literal XL row (24 heads of 128) would be ~17% off the published 1.3B
    literal_xl = ModelConfig.from_preset("gpt3-xl", n_head=24, d_head=128)
    assert count_params(literal_xl)["total"] > 1.5e9


def test_count_works_for_175b_without_allocating():
    c = count_params(ModelConfig.from_preset("gpt3-175b"))
    assert 174e9 < c["total"] < 176e9


def test_flops_formula():
    cfg = ModelConfig(vocab_size=10, block_size=8, n_layer=2, n_head=2, n_embd=16)
    f = flops_per_token(cfg)
    # by hand: per block 4*16*16 + 4*16 (attention) + 2*16*64 + 64 + 16 (MLP) + 4*16 (norms) = 3,280;
    # 2 blocks + ln_f 32 + LM head 10*16 = 6,752 weights in matmuls
    assert f["params_in_matmuls"] == 6_752
    assert f["dense"] == 6 * 6_752 and f["attention"] == 12 * 2 * 16 * 8
    assert f["total"] == f["dense"] + f["attention"]
    assert flops_per_token(cfg, seq_len=4)["attention"] == 12 * 2 * 16 * 4


def test_memory_estimate_state_is_16_bytes_per_param():
    cfg = ModelConfig.from_preset("gpt2")
    m = training_memory(cfg, batch_size=4)
    p = count_params(cfg)["total"]
    for kind in ("fp32", "bf16-mixed"):
        assert m[kind]["weights"] + m[kind]["gradients"] + m[kind]["adamw"] == 16 * p
        assert m[kind]["total"] == sum(v for k, v in m[kind].items() if k != "total")
    assert m["bf16-mixed"]["activations"] < m["fp32"]["activations"]
    assert training_memory(cfg, batch_size=8)["fp32"]["activations"] > m["fp32"]["activations"]


def test_human_and_text_table():
    assert human(124_439_808) == "124.44M" and human(175e9) == "175.00B" and human(45.25) == "45.25"
    assert human(0) == "0" and human(3 * 2**30, "B") == "3.00 GiB" and human(512, "B") == "512 B"
    rows = [("name", "n"), ("a", "1"), ("bbb", "22")]
    assert text_table(rows).splitlines() == ["name   n", "----  --", "a      1", "bbb   22"]
    assert text_table(rows, markdown=True).splitlines()[:3] == ["| name | n |", "|---|---|", "| a | 1 |"]


def test_table_and_cli(capsys):
    table = format_param_table(ModelConfig.from_preset("gpt2"))
    assert "124.44M" in table and "tied to wte" in table
    assert main([]) == 0  # no model given: the presets to choose from, and how, but no silent default size
    out = capsys.readouterr().out
    assert "Parameters of" not in out and "no model given: pick one with --model.preset NAME" in out
    assert "174.60B" in out and "175.00B" in out and "gpt3-13b" in out
    assert main(["--batch_size", "2"]) == 0  # flags alone start from the model defaults, and say so
    assert "Parameters of the default ModelConfig\n" in capsys.readouterr().out
    assert main(["--model.preset", "gpt2", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "Parameters of gpt2\n" in out and "124.44M" in out and "batch 8" in out
    assert main(["--model.preset", "gpt2", "--model.n_layer", "2"]) == 0
    assert "Parameters of gpt2, resized" in capsys.readouterr().out


def test_cli_reads_the_model_table_of_a_file_then_flags(tmp_path, capsys):
    path = tmp_path / "model.toml"
    path.write_text('[model]\npreset = "gpt2"\nn_layer = 6\n')
    assert main([str(path), "--model.n_layer", "12"]) == 0
    assert "124.44M" in capsys.readouterr().out


def test_a_file_without_a_preset_starts_from_the_model_defaults(capsys):
    # configs/induction.toml sets n_layer, n_head, n_embd and block_size: no 175B vocabulary or d_head underneath
    assert main(["configs/induction.toml"]) == 0
    expected = count_params(ModelConfig(n_layer=2, n_head=4, n_embd=128, block_size=64))["total"]
    out = capsys.readouterr().out
    assert "Parameters of a custom model\n" in out and f"total {human(expected)}" in " ".join(out.split())


def test_cli_reads_configs_and_a_runs_saved_config(tmp_path, capsys):
    # these files also hold [data], [train] and [log]: params reads [model] and skips the rest
    assert main(["configs/gpt2.toml"]) == 0
    assert "124.44M" in capsys.readouterr().out
    saved = cli.save(RunConfig(model=ModelConfig.from_preset("micro")), tmp_path / "config.toml")
    assert main([str(saved)]) == 0
    assert "108.35K" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--batch_size", "-1"], "batch_size must be at least 1"),
        (["--model.preset", "micro", "--batch-size", "-1"], "batch_size must be at least 1"),
        (["--seq_len", "0"], "seq_len must be at least 1"),
        (["--model.preset", "nope"], "valid presets"),
        (["--model.preset", "micro", "--model.n_head", "5"], "not divisible"),
        (["--preset", "gpt2"], "unknown option --preset"),
        (["missing.toml"], "not found"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_module_entry_point_prints_no_traceback():
    argv = [sys.executable, "-m", "minigpt.params", "--batch_size", "-1"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]


@pytest.mark.parametrize("argv", [["--help"], [], ["--model.preset", "gpt2"]])
def test_a_reader_that_leaves_gets_no_traceback(argv):
    command = [sys.executable, "-m", "minigpt.params", *argv]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # no reader at all: the first write fails
    assert proc.wait() == 0 and proc.stderr.read() == ""
