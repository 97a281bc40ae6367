"""docs/bench/speedrun.py's logic, without running nanoGPT or a training: reading both tools' evaluation lines,
the time and step of the target, ms per step, nanoGPT's data files and the fairness checks."""

import argparse
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("speedrun_bench", ROOT / "docs/bench/speedrun.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


NANOGPT = [
    (1.5, "number of parameters: 0.80M"),
    (2.0, "step 0: train loss 4.2874, val loss 4.2823"),
    (2.1, "iter 0: loss 4.2648, time 512.31ms, mfu -100.00%"),  # a training line: not an evaluation
    (30.0, "step 250: train loss 2.0321, val loss 2.0877"),
    (58.0, "step 500: train loss 1.7, val loss 1.8857"),
    (86.0, "step 750: train loss 1.6, val loss 1.8500"),
]
MINIGPT = [
    (4.0, "run:       runs/x"),
    (10.0, "iter   300: val loss 1.9500  [6 s]  (best, saved)"),  # --train.no_eval_train: no train loss
    (12.0, "iter   350: train loss 1.8000, val loss 1.8861  [8 s]  (best, saved)"),
    (14.5, "iter   400: val loss 1.8859  [10 s]  (best, saved)"),
]


def test_evaluation_lines_of_both_tools(bench):
    ours = bench.parse_output(NANOGPT, 90.0)
    assert [(s, v) for _, s, v in ours.evals] == [(0, 4.2823), (250, 2.0877), (500, 1.8857), (750, 1.85)]
    theirs = bench.parse_output(MINIGPT, 15.0)
    assert [(s, v) for _, s, v in theirs.evals] == [(300, 1.95), (350, 1.8861), (400, 1.8859)]
    assert theirs.final_val == 1.8859


def test_target_time_step_and_ms_per_step(bench):
    run = bench.parse_output(NANOGPT, 90.0)
    assert run.hit(1.886) == (58.0, 500)  # at or below: 1.8857 counts
    assert run.hit(1.8) is None
    assert run.ms_per_step(1.886) == pytest.approx(1000 * (58.0 - 2.0) / 500)  # from the first evaluation
    assert run.ms_per_step(1.8) == pytest.approx(1000 * (86.0 - 2.0) / 750)  # not reached: up to the last
    late = bench.parse_output(MINIGPT, 15.0)
    assert late.hit(1.886) == (14.5, 400)  # 1.8861 is not at or below 1.886
    assert late.ms_per_step(1.886) == pytest.approx(1000 * (14.5 - 10.0) / 100)
    first = bench.parse_output(MINIGPT[:2], 11.0)  # no evaluation before the hit: from the header's last line
    assert first.ms_per_step(1.96) == pytest.approx(1000 * (10.0 - 4.0) / 300)
    assert bench.parse_output(NANOGPT[:2], 3.0).ms_per_step(5.0) is None  # reached at step 0: no steps to time


def test_table_takes_medians_and_ratio_to_the_first_row(bench):
    nano = [bench.parse_output(NANOGPT, 90.0), bench.parse_output([(t + 10, ln) for t, ln in NANOGPT], 100.0)]
    ours = [bench.parse_output(MINIGPT, 15.0)] * 3
    rows = bench.table({"nanoGPT": nano, "minigpt": ours}, 1.886)
    assert rows[2].startswith("| nanoGPT | 63.0 | 500 | 112.0 | 1.8500 | 2/2 | 1.00x |")
    assert rows[3].startswith("| minigpt | 14.5 | 400 | 45.0 | 1.8859 | 3/3 | 0.23x |")


def test_nanogpt_data_as_its_prepare_writes_it(bench, tmp_path):
    text = "ba\nab" * 10  # 50 characters: train the first 45, val the last 5
    bench.write_nanogpt_data(tmp_path, text)
    folder = tmp_path / "data/shakespeare_char"
    train, val = (np.fromfile(folder / f"{s}.bin", dtype=np.uint16) for s in ("train", "val"))
    meta = pickle.loads((folder / "meta.pkl").read_bytes())
    assert meta["vocab_size"] == 3 and meta["itos"] == {0: "\n", 1: "a", 2: "b"}
    assert len(train) == 45 and len(val) == 5
    assert "".join(meta["itos"][int(i)] for i in np.concatenate([train, val])) == text


def test_ablation_rows_become_overrides(bench):
    args = argparse.Namespace(config="configs/speedrun-cpu.toml", ablate=["model.no_qk_norm", "train.lr=1e-3 --x=1"])
    rows = bench.variants(args)
    assert list(rows.values()) == [[], ["--model.no_qk_norm"], ["--train.lr=1e-3", "--x=1"]]


def test_an_unfair_config_is_refused(bench):
    assert "params" in bench.check_config("configs/speedrun-cpu.toml", [])
    with pytest.raises(SystemExit, match="model.n_layer is 6"):
        bench.check_config("configs/speedrun-cpu.toml", ["--model.n_layer=6"])
    with pytest.raises(SystemExit, match="fewer than nanoGPT's 15,360"):
        bench.check_config("configs/speedrun-cpu.toml", ["--train.eval_iters=2"])


def test_whole_val_loss_covers_every_window_once(bench):
    import torch

    seen = []

    def model(x, y):  # a loss that is each batch's mean target id: the average over windows is easy to check
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token
        seen.append(x)
        return None, y.float().mean()

    val = np.arange(1000, dtype=np.uint16)  # (1000 - 1) // 64 = 15 windows of 64
    loss = bench.whole_val_loss(model, val)
    starts = torch.cat(seen)[:, 0].tolist()
    assert starts == list(range(0, 15 * 64, 64))
    assert loss == pytest.approx(np.arange(1, 15 * 64 + 1).mean())
