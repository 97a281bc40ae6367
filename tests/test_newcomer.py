"""The newcomer's path on a real laptop: what the screen says during and after a run."""

import io

from minigpt.config import ModelConfig, RunConfig
from minigpt.run import report, resolve, train, vocabulary_warning
from minigpt.trainer import SlowStepWatch
from tests.test_run import tiny_args


def test_each_evaluation_line_names_the_strongest_heads_and_the_run_ends_with_a_role_table(corpus, tmp_path):
    cfg, ckpt, path = resolve(tiny_args(corpus, tmp_path, "--train.max_iters=4", "--log.probe_tokens=12"))
    out = io.StringIO()
    result = train(cfg, ckpt, path, out=out)
    evals = [line for line in out.getvalue().splitlines() if line.startswith("iter ")]
    assert len(evals) == 2 and all(" prev L" in line and " ind L" in line for line in evals)
    closing = report(result)
    assert "head roles at the end" in closing and "induction" in closing and "previous_token" in closing
    assert "--samples_per_plugin images=0" in closing  # every step on TensorBoard's slider


def test_a_step_far_slower_than_the_median_is_named_once():
    watch = SlowStepWatch(quiet=100)
    assert all(watch.add(0.1, step) is None for step in range(20))
    warning = watch.add(0.45, 20)
    assert warning is not None and "4.5x the median 0.10 s" in warning and "--train.threads 1" in warning
    assert watch.add(0.5, 21) is None  # not again right away
    assert watch.add(0.29, 200) is None  # under 3x
    assert watch.add(0.5, 300) is not None


def test_a_small_model_under_gpt2_bpe_is_warned_about():
    big_vocab = RunConfig(model=ModelConfig.from_preset("nano", vocab_size=50257))
    warning = vocabulary_warning(big_vocab)
    assert warning is not None and "89% of this model's 7.23M parameters" in warning and "x the FLOPs" in warning
    assert vocabulary_warning(RunConfig(model=ModelConfig.from_preset("nano", vocab_size=65))) is None
    assert vocabulary_warning(RunConfig(model=ModelConfig.from_preset("gpt2", vocab_size=50257))) is None


def test_train_py_says_which_files_of_a_folder_it_skipped(tmp_path):
    folder = tmp_path / "code"
    for i in range(3):
        (folder / f"m{i}.py").parent.mkdir(parents=True, exist_ok=True)
        (folder / f"m{i}.py").write_text(f"def f{i}(x):\n    return x + {i}\n" * 300)
    (folder / "blob.py").write_bytes(b"\x00\x01binary" * 50)
    args = tiny_args(folder, tmp_path, "--data.glob=*.py", "--train.max_iters=1", "--log.no_head_roles")
    cfg, ckpt, path = resolve(args)
    out = io.StringIO()
    train(cfg, ckpt, path, out=out)
    assert f"skipped 1 of 4 files of {folder} that are not UTF-8 text" in out.getvalue()
