"""python sample.py: checkpoint discovery, sampling flags, streaming, errors, attention probes."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from minigpt.checkpoint import save_checkpoint
from minigpt.config import configs_to_dict, load_config
from minigpt.model import GPT, ModelConfig
from minigpt.run import SECTIONS, Run
from minigpt.sample_cli import TextStream, encode_prompt, find_checkpoint, main
from minigpt.tokenizer import GPT2Tokenizer

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 16
STATS = re.compile(r"^\d+ tokens in [\d.]+ s: [\d.]+ tokens/s .*time to first token \d+ ms", re.M)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny char-level run trained for a few steps: <tmp>/runs/r/ckpt_best.pt and ckpt_latest.pt."""
    root = tmp_path_factory.mktemp("sample")
    corpus = root / "small.txt"
    corpus.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    overrides = [
        f"--data.path={corpus}", f"--data.cache_dir={root / 'cache'}", f"--train.out_dir={root / 'runs'}",
        "--train.run_name=r", "--model.n_layer=2", "--model.n_head=2", "--model.n_embd=32",
        f"--model.block_size={BLOCK_SIZE}", "--train.batch_size=4", "--train.max_iters=6", "--train.eval_interval=3",
        "--train.eval_iters=1", "--train.warmup_iters=1", "--log.sample_tokens=0", "--log.tensorboard=false",
        "--log.progress=false", "--log.attention_maps=false", "--train.device=cpu",
    ]  # fmt: skip
    run = Run(load_config(SECTIONS, overrides=overrides), out=open(os.devnull, "w"))
    run.fit()
    return root / "runs/r"


@pytest.fixture
def run_dir(trained, tmp_path):
    """A private copy of the trained run (attention probes write into it)."""
    return Path(shutil.copytree(trained, tmp_path / "runs/r"))


def sample(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sample_ok(capsys, *argv, **kwargs):
    code, out, err = sample(capsys, *argv, **kwargs)
    assert code == 0, err
    return out, err


def assert_one_line_error(code, out, err, *fragments):
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# -- choosing the checkpoint ---------------------------------------------------------------------


def test_default_is_the_newest_runs_best_checkpoint_and_says_which(trained, tmp_path, capsys):
    runs = tmp_path / "runs"
    for name, mtime in (("old", 1_000_000), ("new", 2_000_000), ("middle", 1_500_000)):
        shutil.copytree(trained, runs / name)
        for f in (runs / name).iterdir():
            os.utime(f, (mtime, mtime))
    code, out, err = sample(capsys, "--runs-dir", runs, "--max-new-tokens", 5, "--seed", 0)
    assert code == 0
    assert f"checkpoint: {runs / 'new' / 'ckpt_best.pt'} (the newest of 3 run(s)" in err
    assert out.startswith("\n") and len(out) in (7, 8)  # the newline prompt, 5 characters, a final newline


def test_run_and_ckpt_pick_another_checkpoint(run_dir, tmp_path, capsys):
    code, _, err = sample(capsys, "--run", run_dir, "--max-new-tokens", 3, "--runs-dir", tmp_path / "empty")
    assert code == 0 and f"checkpoint: {run_dir / 'ckpt_best.pt'} (--run;" in err
    latest = run_dir / "ckpt_latest.pt"
    code, _, err = sample(capsys, "--ckpt", latest, "--max-new-tokens", 3)
    assert code == 0 and f"checkpoint: {latest} (--ckpt; iter 6" in err
    (run_dir / "ckpt_best.pt").unlink()
    assert find_checkpoint(run=str(run_dir)) == (latest, "--run")


def test_no_checkpoint_anywhere_says_to_train_first(tmp_path, capsys):
    code, out, err = sample(capsys, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, out, err, "no checkpoint found under", "python train.py")
    (tmp_path / "runs/empty_run").mkdir(parents=True)
    code, out, err = sample(capsys, "--runs-dir", tmp_path / "runs")
    assert_one_line_error(code, out, err, "python train.py")


# -- sampling --------------------------------------------------------------------------------------


def test_output_is_the_prompt_then_exactly_max_new_tokens(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--prompt", "First", "--max-new-tokens", 40, "--seed", 3)
    assert code == 0
    assert out.startswith("First")
    new = out[len("First") :]
    assert len(new.removesuffix("\n")) == 40 or (len(new) == 40 and new.endswith("\n"))
    assert STATS.search(err), err
    assert "(prompt 5 tokens)" in err and "KV cache on, cpu float32, 1 thread" in err and "seed 3" in err


def test_same_seed_same_text_other_seed_other_text(run_dir, capsys):
    args = ("--run", run_dir, "--max-new-tokens", 60, "--temperature", 1.0)
    a = sample_ok(capsys, *args, "--seed", 7)[0]
    b = sample_ok(capsys, *args, "--seed", 7)[0]
    c = sample_ok(capsys, *args, "--seed", 8)[0]
    assert a == b
    assert a != c


def test_greedy_is_deterministic_and_the_cache_does_not_change_the_text(run_dir, capsys):
    # 3 x block_size new tokens: the window slides several times
    args = ("--run", run_dir, "--prompt", "First", "--max-new-tokens", 3 * BLOCK_SIZE, "--temperature", 0)
    cached = sample_ok(capsys, *args, "--seed", 1)[0]
    assert sample_ok(capsys, *args, "--seed", 2)[0] == cached
    uncached, err = sample_ok(capsys, *args, "--no-kv-cache")
    assert uncached == cached and "KV cache off" in err


def test_num_samples_prints_each_sample_after_a_separator(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--prompt", "A", "--num-samples", 3, "--max-new-tokens", 10)
    assert code == 0
    parts = re.split(r"^-+ sample (\d) of 3 -+\n", out, flags=re.M)
    assert parts[0] == "" and parts[1::2] == ["1", "2", "3"]
    for text in parts[2::2]:
        assert text.startswith("A") and len(text.removesuffix("\n")) in (11, 10)  # a generated final \n stays
    assert err.count("30 tokens in") == 1


def test_underscore_spellings_of_flags_are_accepted(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--max_new_tokens=4", "--num_samples", 1, "--top_k=3")
    assert code == 0 and "4 tokens in" in err


def test_one_cpu_thread_by_default_and_the_global_setting_is_restored(run_dir, capsys):
    before = torch.get_num_threads()
    out, err = sample_ok(capsys, "--run", run_dir, "--max-new-tokens", 3)
    assert "cpu float32, 1 thread\n" in err
    out, err = sample_ok(capsys, "--run", run_dir, "--max-new-tokens", 3, "--threads", 2)
    assert "cpu float32, 2 threads\n" in err
    assert torch.get_num_threads() == before
    assert_one_line_error(*sample(capsys, "--run", run_dir, "--threads", 0), "--threads must be at least 1")


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--ckpt", "--run", "--prompt-file", "--max-new-tokens", "--top-p", "--no-kv-cache", "--attention-png"):
        assert flag in out


def test_prompt_file(run_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:\n")
    code, out, _ = sample(capsys, "--run", run_dir, "--prompt-file", prompt, "--max-new-tokens", 3)
    assert code == 0 and out.startswith("ROMEO:\n")


# -- bad input: one line, exit code 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--prompt", "Héllo ü"], ["--prompt has 2 character(s)", "'é' 'ü'"]),
        (["--prompt", ""], ["--prompt is empty"]),
        (["--temperature", "-0.5"], ["--temperature must be >= 0", "got -0.5"]),
        (["--top-k", "0"], ["--top-k must be between 1 and the vocabulary size"]),
        (["--top-k", "1000"], ["--top-k must be between 1", "got 1000"]),
        (["--top-p", "0"], ["--top-p must be in (0, 1]"]),
        (["--top-p", "1.5"], ["--top-p must be in (0, 1]"]),
        (["--max-new-tokens", "0"], ["--max-new-tokens must be at least 1"]),
        (["--num-samples", "0"], ["--num-samples must be at least 1"]),
        (["--temperature", "hot"], ["--temperature: invalid float value: 'hot'"]),
        (["--no-such-flag"], ["unrecognized arguments: --no-such-flag"]),
        (["--prompt-file", "/no/such/prompt.txt"], ["--prompt-file /no/such/prompt.txt: no such file"]),
        (["--attention-png", "x"], ["--attention-png goes with --attention"]),
        (["--attention"], ["--attention needs text"]),
        (["--attention", ""], ["--attention is empty"]),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(run_dir, capsys, argv, fragments):
    assert_one_line_error(*sample(capsys, "--run", run_dir, *argv), *fragments)


def test_empty_prompt_file(run_dir, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, out, err = sample(capsys, "--run", run_dir, "--prompt-file", tmp_path / "empty.txt")
    assert_one_line_error(code, out, err, "empty.txt is empty")


def test_a_file_that_is_not_a_checkpoint_or_is_truncated(run_dir, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(*sample(capsys, "--ckpt", junk), "junk.pt is not a readable minigpt checkpoint")
    data = (run_dir / "ckpt_best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*sample(capsys, "--ckpt", cut), "cut.pt is not a readable minigpt checkpoint")
    assert_one_line_error(*sample(capsys, "--ckpt", run_dir), "is a folder")
    assert_one_line_error(*sample(capsys, "--run", tmp_path / "nope"), "no such folder")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_device_that_is_not_there(run_dir, capsys):
    assert_one_line_error(*sample(capsys, "--run", run_dir, "--device", "mps"), "--device mps", "--device auto or cpu")


# -- attention probe -----------------------------------------------------------------------------


def _events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_attention_writes_tensorboard_maps_and_pngs(run_dir, tmp_path, capsys):
    png = tmp_path / "png"
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "First Citizen", "--attention-png", png)
    assert code == 0, err
    assert "attention maps: 13 tokens, 2 layers x 2 heads" in out
    assert f"tensorboard --logdir {run_dir.parent}" in out
    assert sorted(p.name for p in png.iterdir()) == [
        "layer_0_all_heads.png", "layer_0_head_0.png", "layer_0_head_1.png",
        "layer_1_all_heads.png", "layer_1_head_0.png", "layer_1_head_1.png",
    ]  # fmt: skip
    # a second probe gets the next step, so the two do not collide
    assert sample(capsys, "--run", run_dir, "--attention", "Citizen")[0] == 0
    acc = _events(run_dir)
    tags = acc.Tags()
    for tag in (
        "attention_probe/layer_0/head_0", "attention_probe/layer_1/head_1", "attention_probe/layer_1/all_heads",
    ):
        assert tag in tags["images"], tag
        assert [e.step for e in acc.Images(tag)] == [0, 1]
    assert "attention_probe_entropy/layer_0/head_1" in tags["scalars"]
    records = [json.loads(line) for line in (run_dir / "attention_probes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["text"], r["tokens"]) for r in records] == [(0, "First Citizen", 13), (1, "Citizen", 7)]


def test_attention_crops_to_block_size_and_can_include_generated_tokens(run_dir, capsys):
    text = "First Citizen: Before we proceed any further"
    code, out, err = sample(capsys, "--run", run_dir, "--attention", text)
    assert code == 0 and f"the text is {len(text)} tokens" in err and f"the last {BLOCK_SIZE}" in err
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "Be", "--attention-generate", 5, "--seed", 1)
    assert code == 0 and out.startswith("Be") and STATS.search(err)
    record = json.loads((run_dir / "attention_probes.jsonl").read_text().splitlines()[-1])
    assert record["tokens"] == 7 and record["text"].startswith("Be") and len(record["text"]) == 7
    assert out.startswith(record["text"])


# -- BPE: streaming whole characters ---------------------------------------------------------------


def test_text_stream_never_prints_half_a_character():
    tok = GPT2Tokenizer()
    text = "naïve café: 😀🎉 日本語のテキスト, done."
    ids = tok.encode(text)
    stream = TextStream(tok)
    pieces = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert any(tok.decode_token(i).endswith("\ufffd") for i in ids)  # the test does split characters


def test_gpt2_checkpoint_starts_from_endoftext(tmp_path, capsys):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=2, n_embd=16)
    tok = GPT2Tokenizer()
    payload = {
        "model": GPT(cfg).state_dict(), "config": configs_to_dict({"model": cfg}), "tokenizer": tok.to_dict(),
        "iter": 0, "best_val_loss": float("inf"),
    }  # fmt: skip
    save_checkpoint(tmp_path / "runs/bpe/ckpt_best.pt", payload)
    code, out, err = sample(capsys, "--runs-dir", tmp_path / "runs", "--max-new-tokens", 20, "--seed", 0)
    assert code == 0 and "(prompt 1 tokens)" in err and "gpt2 tokenizer (vocab 50257)" in err
    assert encode_prompt(tok, "<|endoftext|>Hi") == [tok.eot_id, *tok.encode("Hi")]
