"""The benchmark harness runs end to end on a tiny model (the numbers themselves are not tested)."""

import json

from minigpt.bench import format_table, main


def test_bench_train_attention_generate_and_json(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    argv = ["all", "--preset", "micro", "--block-size", "16", "--batch-size", "2", "--steps", "2", "--warmup", "1",
            "--repeats", "1", "--block-sizes", "8,16", "--new-tokens", "5", "--json", str(out_json)]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    for section in ("## train", "## attention", "## generate"):
        assert section in out
    data = json.loads(out_json.read_text())
    train = data["results"]["train"]
    assert {r["attn"] for r in train} == {"manual", "sdpa"}
    assert all(r["ms_per_iter"] > 0 and r["tokens_per_s"] > 0 for r in train)
    assert [r["T"] for r in data["results"]["attention"]] == [8, 8, 16, 16]
    gen = data["results"]["generate"]
    assert {r["kv_cache"] for r in gen} == {True, False} and all(r["tokens_per_s"] > 0 for r in gen)


def test_bench_profile_reports_phases(capsys):
    assert main(["profile", "--preset", "micro", "--block-size", "16", "--batch-size", "2", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    for phase in ("forward", "backward", "clip + optimizer"):
        assert phase in out
    assert "Self CPU" in out


def test_markdown_table():
    table = format_table([{"a": 1.5, "mfu": 0.42}, {"a": 12345.0, "mfu": 0.5}], markdown=True)
    assert table.splitlines()[0] == "| a | mfu |" and "42.0%" in table and "12,345.0" in table


def test_bad_preset_is_an_error(capsys):
    assert main(["train", "--preset", "nope"]) == 2
    assert "valid presets" in capsys.readouterr().err
