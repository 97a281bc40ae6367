"""The benchmark harness runs end to end on a tiny model (the numbers themselves are not tested)."""

import copy
import json
import subprocess
import sys

import pytest
import torch

from minigpt.bench import format_rows, main

TINY = ["--model.preset", "micro", "--model.block_size", "16", "--batch_size", "2", "--steps", "2", "--warmup", "1",
        "--repeats", "1"]  # fmt: skip


def test_bench_train_attention_generate_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["all", *TINY, "--block_sizes", "8", "16", "--new_tokens", "5", f"--json={out_json}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for section in ("## train", "## attention", "## generate"):
        assert section in out
    data = json.loads(out_json.read_text())
    assert data["config"]["model"]["n_layer"] == 2 and data["config"]["batch_size"] == 2
    train = data["results"]["train"]
    assert {r["attn"] for r in train} == {"manual", "sdpa"}
    assert all(r["ms_per_iter"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert all(r["config"] == "2L 64w T=16 B=2" and r["dtype"] == "float32" for r in train)
    assert [r["T"] for r in data["results"]["attention"]] == [8, 8, 16, 16]
    gen = data["results"]["generate"]
    assert {r["kv_cache"] for r in gen} == {True, False} and all(r["tokens_per_s"] > 0 for r in gen)


def test_bench_attn_choice_applies_to_train_and_attention(tmp_path):
    out_json = tmp_path / "bench.json"
    assert main(["all", *TINY, "--attn", "sdpa", "--block_sizes", "8", "--new_tokens", "2", f"--json={out_json}"]) == 0
    results = json.loads(out_json.read_text())["results"]
    assert [r["attn"] for r in results["train"]] == ["sdpa"]
    assert [r["attn"] for r in results["attention"]] == ["sdpa"]


def test_bench_profile_reports_phases(capsys):
    assert main(["profile", *TINY]) == 0
    out = capsys.readouterr().out
    for phase in ("forward", "backward", "optimizer", "other"):
        assert f"\n{phase}" in out
    assert "Self CPU" in out


def test_format_rows_text_and_markdown():
    rows = [{"a": 1.5, "mfu": 0.42}, {"a": 12345.0, "mfu": 0.5, "b": "x"}]
    table = format_rows(rows, markdown=True)
    assert table.splitlines()[0] == "| a | mfu | b |" and "42.0%" in table and "12.35K" in table
    lines = format_rows(rows).splitlines()
    assert lines[0].split() == ["a", "mfu", "b"] and lines[2].split() == ["1.5", "42.0%"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--steps", "0"], "steps must be at least 1"),
        (["train", "--batch_size", "0"], "batch_size must be at least 1"),
        (["train", "--batch-size", "0"], "batch_size must be at least 1"),
        (["attention", "--block_sizes", "abc"], "--block_sizes"),
        (["attention", "--block-sizes", "0"], "block_sizes must be positive"),
        (["train", "--model.n_head", "3", "--model.n_embd", "32"], "not divisible by model.n_head=3"),
        (["train", "--model.preset", "nope"], "valid presets"),
        (["train", "--model.attn_score", "additive", "--attn", "sdpa"], "no fused kernel"),
        (["nope"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_an_unwritable_json_path_is_a_runtime_fault(capsys):
    assert main(["train", *TINY, "--json=/nonexistent/dir/bench.json"]) == 1  # an OSError, as in every tool
    err = capsys.readouterr().err.strip()
    assert err == "error: /nonexistent/dir/bench.json: No such file or directory; check the path"


def test_module_entry_point_prints_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "minigpt.bench", "--steps", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: steps must be at least 1") and len(proc.stderr.splitlines()) == 1


def test_json_value_is_not_a_config_file(tmp_path):
    assert main(["train", *TINY, "--attn", "sdpa", "--json", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "b.json").exists()


def test_float16_sampling_weights_cost_little_on_a_trained_model(tmp_path):
    from minigpt.bench import dtype_quality
    from minigpt.checkpoint import load_model
    from minigpt.config import DataConfig
    from minigpt.data import prepare
    from tests.test_run import ROOT, run

    corpus = tmp_path / "c.txt"
    corpus.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:60_000])
    run(corpus, tmp_path, "--train.max_iters=40", "--train.eval_interval=20", "--model.dropout=0")
    model, _, _ = load_model(tmp_path / "runs/r/ckpt_latest.pt", "cpu")
    val = prepare(DataConfig(path=str(corpus), cache_dir=str(tmp_path / "cache")), progress=False).load_split("val")
    row = dtype_quality(model, copy.deepcopy(model).for_decoding(torch.float16), val, positions=2_000)
    assert row["positions"] >= 2_000 and row["val_loss_fp32"] < 3.5  # it did learn something
    assert 0 < row["max_logit_diff"] < 0.05  # float16 really ran, and stayed close
    assert abs(row["loss_cost"]) < 0.002 and row["top1_agreement"] > 0.99
    assert model.wte.weight.dtype == torch.float32  # the model itself was not converted


def test_bfloat16_sampling_on_a_cpu_without_it_is_refused(monkeypatch):
    from minigpt import runtime
    from minigpt.sample_cli import weights_dtype

    monkeypatch.setattr(runtime, "cpu_has_native", lambda dtype: False)
    with pytest.raises(ValueError, match="dtype=bfloat16 on this CPU has no native bfloat16 .*use dtype float16"):
        weights_dtype("bfloat16", torch.device("cpu"))
    assert weights_dtype("float16", torch.device("cpu")) == torch.float16
    assert weights_dtype("auto", torch.device("cpu")) == torch.float32


def test_decode_bench_times_the_step_against_its_products_and_profiles_it(tmp_path, capsys):
    out_json = tmp_path / "decode.json"
    argv = ["decode", *TINY, "--new_tokens", "6", "--weights", "float32", "float16", f"--json={out_json}"]
    assert main(argv) == 0
    assert "## decode_profile" in capsys.readouterr().out
    results = json.loads(out_json.read_text())["results"]
    fp32, fp16 = results["decode"]
    assert (fp32["weights"], fp32["layout"], fp16["layout"]) == ("float32", "(in, out)", "(out, in)")
    assert fp32["MB_read"] == pytest.approx(2 * fp16["MB_read"])  # the linear weights at 4 and 2 bytes
    for row in (fp32, fp16):
        assert row["step_ms"] > 0 and row["products_ms"] > 0 and row["products_before_ms"] > 0 and row["read_fp32_ms"] > 0
        assert row["step/products"] == pytest.approx(row["step_ms"] / row["products_ms"])
    parts = {row["part"]: row for row in results["decode_profile"]}
    assert parts["matrix-vector products"]["float32_ms"] > 0 and parts["GELU"]["float16_ms"] > 0
    shares = sum(row["float32_share"] for name, row in parts.items() if name != "profiled step")
    assert shares == pytest.approx(1.0)
