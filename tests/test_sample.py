"""python sample.py: checkpoint discovery, sampling settings, streaming, errors, attention probes."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch

from minigpt import cli
from minigpt.checkpoint import save_checkpoint
from minigpt.config import ModelConfig, RunConfig, SampleConfig
from minigpt.model import GPT
from minigpt.sample_cli import find_checkpoint, load_model, main, read_prompt, stream_text
from minigpt.tokenizer import CharTokenizer, GPT2Tokenizer

ROOT = Path(__file__).resolve().parents[1]
BLOCK_SIZE = 16
STATS = re.compile(r"^\d+ tokens in [\d.]+ s: [\d.]+ tokens/s .*time to first token \d+ ms", re.M)


def write_checkpoint(path, cfg, tokenizer, iter=6, best_val_loss=2.5, seed=0):
    """A checkpoint as the trainer writes one, of an untrained GPT with peaked logits (so text varies)."""
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(4.0)
    payload = {
        "model": model.state_dict(), "config": cli.to_dict(RunConfig(model=cfg)), "tokenizer": tokenizer.to_dict(),
        "iter": iter, "best_val_loss": best_val_loss,
    }  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(path, payload)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny char-level run folder: <tmp>/runs/r/ckpt_best.pt (iter 3) and ckpt_latest.pt (iter 6)."""
    run = tmp_path_factory.mktemp("sample") / "runs/r"
    tok = CharTokenizer.from_text((ROOT / "data/shakespeare/input.txt").read_text()[:20_000])
    cfg = ModelConfig(vocab_size=tok.vocab_size, block_size=BLOCK_SIZE, n_layer=2, n_head=2, n_embd=32)
    write_checkpoint(run / "ckpt_best.pt", cfg, tok, iter=3, best_val_loss=2.25)
    write_checkpoint(run / "ckpt_latest.pt", cfg, tok, iter=6, best_val_loss=2.25, seed=1)
    return run


@pytest.fixture
def run_dir(trained, tmp_path):
    """A private copy of the run (attention probes write into it)."""
    return Path(shutil.copytree(trained, tmp_path / "runs/r"))


def sample(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sample_ok(capsys, *argv):
    code, out, err = sample(capsys, *argv)
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
    code, out, err = sample(capsys, "--runs_dir", runs, "--max_new_tokens", 5, "--seed", 0)
    assert code == 0
    assert f"checkpoint: {runs / 'new' / 'ckpt_best.pt'} (the newest of 3 run(s) under {runs}/; iter 3" in err
    assert out.startswith("\n") and len(out) in (7, 8)  # the newline prompt, 5 characters, a final newline


def test_run_and_ckpt_pick_another_checkpoint(run_dir, tmp_path, capsys):
    code, _, err = sample(capsys, "--run", run_dir, "--max_new_tokens", 3, "--runs_dir", tmp_path / "empty")
    assert code == 0 and f"checkpoint: {run_dir / 'ckpt_best.pt'} (--run; iter 3, best val loss 2.2500)" in err
    latest = run_dir / "ckpt_latest.pt"
    code, _, err = sample(capsys, "--ckpt", latest, "--max_new_tokens", 3)
    assert code == 0 and f"checkpoint: {latest} (--ckpt; iter 6" in err
    (run_dir / "ckpt_best.pt").unlink()
    assert find_checkpoint(run=str(run_dir)) == (latest, "--run")
    assert find_checkpoint(run=str(latest)) == (latest, "--run")


def test_no_checkpoint_anywhere_says_to_train_first(tmp_path, capsys):
    code, out, err = sample(capsys, "--runs_dir", tmp_path / "runs")
    assert_one_line_error(code, out, err, f"no checkpoint found under {tmp_path / 'runs'}/", "python train.py")
    (tmp_path / "runs/empty_run").mkdir(parents=True)
    (tmp_path / "runs/stray_file.txt").write_text("not a run")
    code, out, err = sample(capsys, "--runs_dir", tmp_path / "runs")
    assert_one_line_error(code, out, err, "python train.py")
    code, out, err = sample(capsys, "--run", tmp_path / "runs/empty_run")
    assert_one_line_error(code, out, err, "holds no ckpt_best.pt or ckpt_latest.pt", "python train.py")


def test_load_model_rebuilds_the_saved_model_in_eval_mode(trained):
    model, tok, trained_for = load_model(trained / "ckpt_latest.pt", torch.device("cpu"))
    assert not model.training and model.config.block_size == BLOCK_SIZE and model.config.d_head is None
    assert tok.kind == "char" and tok.vocab_size == model.config.vocab_size
    assert trained_for == "iter 6, best val loss 2.2500"
    saved = torch.load(trained / "ckpt_latest.pt", weights_only=True)["model"]
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name
    assert model.lm_head.weight is model.wte.weight  # tied again after the load
    assert all(p.device.type == "cpu" for p in model.parameters())  # nothing left on the meta device


# -- sampling --------------------------------------------------------------------------------------


def test_output_is_the_prompt_then_exactly_max_new_tokens(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--prompt", "First", "--max_new_tokens", 40, "--seed", 3)
    assert code == 0
    assert out.startswith("First")
    new = out[len("First") :]
    assert len(new.removesuffix("\n")) == 40 or (len(new) == 40 and new.endswith("\n"))
    assert STATS.search(err), err
    assert "(prompt 5 tokens)" in err and "KV cache on, cpu float32, 1 thread" in err and "seed 3" in err


def test_a_random_seed_is_printed_and_reproduces_the_text(run_dir, capsys):
    args = ("--run", run_dir, "--max_new_tokens", 30, "--temperature", 1.0)
    out, err = sample_ok(capsys, *args)
    seed = re.search(r"; seed (\d+)$", err, re.M).group(1)
    assert sample_ok(capsys, *args, "--seed", seed)[0] == out


def test_same_seed_same_text_other_seed_other_text(run_dir, capsys):
    args = ("--run", run_dir, "--max_new_tokens", 60, "--temperature", 1.0)
    a = sample_ok(capsys, *args, "--seed", 7)[0]
    b = sample_ok(capsys, *args, "--seed", 7)[0]
    c = sample_ok(capsys, *args, "--seed", 8)[0]
    assert a == b
    assert a != c


def test_greedy_is_deterministic_and_the_cache_does_not_change_the_text(run_dir, capsys):
    # 3 x block_size new tokens: the window slides several times
    args = ("--run", run_dir, "--prompt", "First", "--max_new_tokens", 3 * BLOCK_SIZE, "--temperature", 0)
    cached = sample_ok(capsys, *args, "--seed", 1)[0]
    assert sample_ok(capsys, *args, "--seed", 2)[0] == cached
    assert len(set(cached)) > 4  # real text, not one character repeated
    uncached, err = sample_ok(capsys, *args, "--no_kv_cache")
    assert uncached == cached and "KV cache off" in err
    assert sample_ok(capsys, *args, "--no-kv-cache", "--slide", 1)[0] != cached  # the slide is passed on


def test_streamed_text_is_the_decoded_generation(run_dir, capsys):
    from minigpt.generate import generate_ids

    out, _ = sample_ok(capsys, "--run", run_dir, "--prompt", "Be", "--max_new_tokens", 20, "--seed", 4,
                       "--top_k", 5, "--top_p", 0.9, "--temperature", 1.2)  # fmt: skip
    model, tok, _ = load_model(run_dir / "ckpt_best.pt", torch.device("cpu"))
    ids = generate_ids(model, tok.encode("Be"), 20, seed=4, top_k=5, top_p=0.9, temperature=1.2)
    text = tok.decode(ids[0].tolist())
    assert out == text + ("" if text.endswith("\n") else "\n")


def test_num_samples_prints_each_sample_after_a_separator(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--prompt", "A", "--num_samples", 3, "--max_new_tokens", 10)
    assert code == 0
    parts = re.split(r"^-+ sample (\d) of 3 -+\n", out, flags=re.M)
    assert parts[0] == "" and parts[1::2] == ["1", "2", "3"]
    for text in parts[2::2]:
        assert text.startswith("A") and len(text.removesuffix("\n")) in (11, 10)  # a generated final \n stays
    assert len(set(parts[2::2])) > 1
    assert err.count("30 tokens in") == 1


def test_dashed_and_underscored_flags_are_both_accepted(run_dir, capsys):
    code, out, err = sample(capsys, "--run", run_dir, "--max-new-tokens=4", "--num_samples", 1, "--top-k=3")
    assert code == 0 and "4 tokens in" in err


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="asks for 2 threads, more than this machine's cores")
def test_one_cpu_thread_by_default_and_the_global_setting_is_restored(run_dir, capsys):
    before = torch.get_num_threads()
    out, err = sample_ok(capsys, "--run", run_dir, "--max_new_tokens", 3)
    assert "cpu float32, 1 thread\n" in err
    out, err = sample_ok(capsys, "--run", run_dir, "--max_new_tokens", 3, "--threads", 2)
    assert "cpu float32, 2 threads\n" in err
    assert torch.get_num_threads() == before
    assert_one_line_error(*sample(capsys, "--run", run_dir, "--threads", 0), "threads must be at least 1")


def test_a_long_prompt_gets_a_note(run_dir, capsys):
    out, err = sample_ok(capsys, "--run", run_dir, "--prompt", "First Citizen: Before we", "--max_new_tokens", 2)
    assert "note: the prompt is 24 tokens; the model sees at most the last 16" in err


def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--ckpt", "--run", "--prompt_file", "--max_new_tokens", "--top_p", "--no_kv_cache", "--attention_png"):
        assert flag in out


def test_prompt_file(run_dir, tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("ROMEO:\n")
    code, out, _ = sample(capsys, "--run", run_dir, "--prompt_file", prompt, "--max_new_tokens", 3)
    assert code == 0 and out.startswith("ROMEO:\n")


# -- bad input: one line, exit code 2 ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--prompt", "Héllo ü"], ["--prompt has 2 character(s)", "'é' 'ü'"]),
        (["--prompt", ""], ["--prompt is empty"]),
        (["--temperature", "-0.5"], ["temperature must be a finite number >= 0", "got -0.5"]),
        (["--temperature", "inf"], ["temperature must be a finite number", "got inf"]),
        (["--temperature", "nan"], ["temperature must be a finite number", "got nan"]),
        (["--top_k", "0"], ["top_k must be between 1 and the vocabulary size"]),
        (["--top-k", "1000"], ["top_k must be between 1", "got 1000"]),
        (["--top_p", "0"], ["top_p must be in (0, 1]"]),
        (["--top_p", "1.5"], ["top_p must be in (0, 1]"]),
        (["--top_p", "nan"], ["top_p must be", "got nan"]),
        (["--slide", "17"], ["slide must be between 1 and block_size=16"]),
        (["--max_new_tokens", "0"], ["max_new_tokens must be at least 1"]),
        (["--num_samples", "0"], ["num_samples must be at least 1"]),
        (["--temperature", "hot"], ["--temperature", "'hot'"]),
        (["--no-such-flag"], ["unknown option --no_such_flag"]),
        (["--kv_cache=no"], ["--kv_cache is a switch"]),
        (["--prompt", "A", "--prompt_file", "B"], ["give prompt or prompt_file, not both"]),
        (["--ckpt", "x.pt"], ["give one of ckpt, run and hf, not several"]),
        (["--prompt_file", "/no/such/prompt.txt"], ["--prompt_file /no/such/prompt.txt: no such file"]),
        (["--attention_png", "x"], ["attention_png and attention_generate only apply with attention"]),
        (["--attention_generate", "3"], ["only apply with attention"]),
        (["--attention"], ["attention needs a text"]),
        (["--attention", "--prompt", ""], ["--prompt is empty"]),
        (["--attention", "--prompt", "A", "--num_samples", "2"], ["num_samples does not apply to attention"]),
        (["--attention", "First Citizen"], ["options: First Citizen"]),  # --attention is a switch now
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(run_dir, capsys, argv, fragments):
    assert_one_line_error(*sample(capsys, "--run", run_dir, *argv), *fragments)


def test_bad_prompt_files(run_dir, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    code, out, err = sample(capsys, "--run", run_dir, "--prompt_file", tmp_path / "empty.txt")
    assert_one_line_error(code, out, err, "empty.txt is empty")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    code, out, err = sample(capsys, "--run", run_dir, "--prompt_file", tmp_path / "latin1.txt")
    assert_one_line_error(code, out, err, "latin1.txt is not UTF-8 text")


def test_a_file_that_is_not_a_checkpoint_or_is_truncated(run_dir, tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    assert_one_line_error(*sample(capsys, "--ckpt", junk), "junk.pt is not a minigpt checkpoint: it is neither a PyTorch zip")
    data = (run_dir / "ckpt_best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert_one_line_error(*sample(capsys, "--ckpt", cut), "cut.pt is not a readable minigpt checkpoint: it is a zip archive, but truncated")
    assert_one_line_error(*sample(capsys, "--ckpt", run_dir), "is a folder")
    assert_one_line_error(*sample(capsys, "--ckpt", tmp_path / "x.pt"), f"no checkpoint at {tmp_path / 'x.pt'}")
    assert_one_line_error(*sample(capsys, "--run", tmp_path / "nope"), "is not a folder")


def test_a_checkpoint_whose_parts_do_not_fit(tmp_path, capsys):
    tok = CharTokenizer("abc")
    cfg = ModelConfig(vocab_size=3, block_size=4, n_layer=1, n_head=1, n_embd=8)
    write_checkpoint(tmp_path / "vocab.pt", cfg.replace(vocab_size=4), tok)
    assert_one_line_error(*sample(capsys, "--ckpt", tmp_path / "vocab.pt"), "tokenizer has 3 tokens but the model 4")
    ckpt = torch.load(write_checkpoint(tmp_path / "weights.pt", cfg, tok), weights_only=True)
    ckpt["config"]["model"]["n_embd"] = 16
    torch.save(ckpt, tmp_path / "weights.pt")
    assert_one_line_error(*sample(capsys, "--ckpt", tmp_path / "weights.pt"), "the weights do not fit")
    ckpt["config"]["model"]["n_layers"] = 2
    torch.save(ckpt, tmp_path / "keys.pt")
    assert_one_line_error(*sample(capsys, "--ckpt", tmp_path / "keys.pt"), "n_layers", "keys.pt")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_a_device_that_is_not_there(run_dir, capsys):
    assert_one_line_error(*sample(capsys, "--run", run_dir, "--device", "mps"), "device", "mps", "auto or cpu")


# -- attention probe -----------------------------------------------------------------------------


def _events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_attention_writes_tensorboard_maps_and_pngs(run_dir, tmp_path, capsys):
    png = tmp_path / "png"
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "--prompt", "First Citizen", "--attention_png", png)
    assert code == 0, err
    assert "attention maps: 13 tokens, 2 layers x 2 heads" in out
    assert f"TensorBoard: {run_dir / 'attention_probe'}, step 0" in out
    assert f"tensorboard --logdir {run_dir.parent}" in out
    assert sorted(p.name for p in png.iterdir()) == [
        "layer_0_all_heads.png", "layer_0_head_0.png", "layer_0_head_1.png",
        "layer_1_all_heads.png", "layer_1_head_0.png", "layer_1_head_1.png",
    ]  # fmt: skip
    # a second probe gets the next step, so the two do not collide
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "--prompt", "Citizen")
    assert code == 0 and "step 1" in out and "PNG" not in out
    acc = _events(run_dir / "attention_probe")
    images = acc.Tags()["images"]
    for layer in range(2):
        for name in ("head_0", "head_1", "all_heads"):
            tags = [t for t in images if t.endswith(f"layer_{layer}/{name}")]
            assert len(tags) == 1, (layer, name, images)
            assert [e.step for e in acc.Images(tags[0])] == [0, 1]
    assert any("entropy" in t and t.endswith("layer_0/head_1") for t in acc.Tags()["scalars"])
    records = [json.loads(line) for line in (run_dir / "attention_probe/probes.jsonl").read_text().splitlines()]
    assert [(r["step"], r["text"], r["tokens"]) for r in records] == [(0, "First Citizen", 13), (1, "Citizen", 7)]


def test_attention_crops_to_block_size_and_can_include_generated_tokens(run_dir, capsys):
    text = "First Citizen: Before we proceed any further"
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "--prompt", text)
    assert code == 0 and f"the text is {len(text)} tokens" in err and f"the last {BLOCK_SIZE}" in err
    assert f"attention maps: {BLOCK_SIZE} tokens" in out
    code, out, err = sample(capsys, "--run", run_dir, "--attention", "--prompt", "Be", "--attention_generate", 5,
                            "--seed", 1)  # fmt: skip
    assert code == 0 and out.startswith("Be") and STATS.search(err)
    record = json.loads((run_dir / "attention_probe/probes.jsonl").read_text().splitlines()[-1])
    assert record["tokens"] == 7 and record["text"].startswith("Be") and len(record["text"]) == 7
    assert out.startswith(record["text"])


# -- BPE: streaming whole characters ---------------------------------------------------------------


def test_text_stream_never_prints_half_a_character():
    tok = GPT2Tokenizer()
    text = "naïve café: 😀🎉 日本語のテキスト, done."
    ids = tok.encode(text)
    pieces = list(stream_text(tok, ids))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    assert any(tok.decode_token(i).endswith("\ufffd") for i in ids)  # the test does split characters
    assert "".join(stream_text(tok, ids[:-1] + tok.encode("😀")[:1])).endswith("\ufffd")  # held back, then shown


def test_gpt2_checkpoint_starts_from_endoftext(tmp_path, capsys):
    cfg = ModelConfig(vocab_size=50257, block_size=8, n_layer=1, n_head=2, n_embd=16)
    tok = GPT2Tokenizer()
    write_checkpoint(tmp_path / "runs/bpe/ckpt_best.pt", cfg, tok, iter=0, best_val_loss=float("inf"))
    code, out, err = sample(capsys, "--runs_dir", tmp_path / "runs", "--max_new_tokens", 20, "--seed", 0)
    assert code == 0 and "(prompt 1 tokens)" in err and "gpt2 tokenizer (vocab 50257)" in err
    assert "(the newest of 1 run(s) under" in err and "; iter 0)" in err  # an inf val loss is not shown
    assert read_prompt(SampleConfig(prompt="<|endoftext|>Hi"), tok)[1] == [tok.eot_id, *tok.encode("Hi")]
    assert read_prompt(SampleConfig(prompt="a<|endoftext|>"), tok)[1] == [*tok.encode("a"), tok.eot_id]
