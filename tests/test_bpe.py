"""data.tokenizer=bpe: a byte-level BPE trained on the corpus, from preparation to sampling, roles and export."""

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt import data as data_module
from minigpt.checkpoint import save_checkpoint
from minigpt.cli import to_dict
from minigpt.config import DataConfig, ModelConfig, RunConfig
from minigpt.data import DataError, load_prepared, prepare
from minigpt.metrics import display_tokens
from minigpt.model import GPT
from minigpt.roles import head_roles, role_probes
from minigpt.run import vocabulary_warning
from minigpt.tokenizer import BPETokenizer, TokenizerError, tokenizer_from_dict

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "shakespeare" / "input.txt"


def _cfg(tmp_path: Path, path: Path | str = SHAKESPEARE, **kw) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), tokenizer="bpe", **kw)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def shakespeare_bpe(tmp_path_factory):
    """Tiny Shakespeare prepared with a 512-token BPE, once for this module."""
    return prepare(_cfg(tmp_path_factory.mktemp("bpe"), vocab_size=512), progress=False)


# ---------------------------------------------------------------------------------------------- the tokenizer


def test_prepared_bpe_has_the_vocabulary_asked_for_and_round_trips(shakespeare_bpe):
    tok, meta = shakespeare_bpe.tokenizer, shakespeare_bpe.meta
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == meta["vocab_size"] == 512
    assert shakespeare_bpe.dir.name == "shakespeare-input-bpe512"
    assert meta["dtype"] == "uint16" and meta["tokenizer"]["kind"] == "bpe"
    text = "First Citizen:\nBefore we proceed, café 日本語 🙂  \t'tis\r\n"
    assert tok.decode(tok.encode(text)) == text
    # merges make it shorter than its bytes; fewer tokens per character than char-level
    assert len(tok.encode("First Citizen")) < len("First Citizen".encode())
    assert meta["train_tokens"] < 0.6 * meta["train_chars"]
    # the token files are the corpus: documents decode back to the text
    ids = np.concatenate([shakespeare_bpe.load_split("train"), shakespeare_bpe.load_split("val")]).tolist()
    assert tok.decode(ids) == SHAKESPEARE.read_text(encoding="utf-8")


def test_end_of_text_is_one_special_token_and_plain_text_in_encode(shakespeare_bpe):
    tok = shakespeare_bpe.tokenizer
    assert tok.decode([tok.eot_id]) == "<|endoftext|>"
    ids = tok.encode("a<|endoftext|>b")  # written in the text, it is characters, as gpt2's encode reads it
    assert tok.eot_id not in ids and tok.decode(ids) == "a<|endoftext|>b"
    assert tok.encode_batch(["a b", "<|endoftext|>"]) == [tok.encode("a b"), tok.encode("<|endoftext|>")]


def test_to_dict_is_checkpoint_safe_and_rebuilds_the_same_tokenizer(shakespeare_bpe, tmp_path):
    tok = shakespeare_bpe.tokenizer
    saved = tok.to_dict()
    assert set(saved) == {"kind", "json"} and isinstance(saved["json"], str)
    torch.save({"tokenizer": saved}, tmp_path / "t.pt")
    loaded = torch.load(tmp_path / "t.pt", weights_only=True)["tokenizer"]
    again = tokenizer_from_dict(loaded)
    assert again == tok and again.encode("Good morrow") == tok.encode("Good morrow")
    assert pickle.loads(pickle.dumps(tok)) == tok  # how data's worker processes get it
    with pytest.raises(TokenizerError, match="not valid tokenizer JSON"):
        tokenizer_from_dict({"kind": "bpe", "json": saved["json"][:-20]})


def test_token_labels_are_readable_text(shakespeare_bpe):
    tok = shakespeare_bpe.tokenizer
    ids = tok.encode("Good morrow, neighbour")
    labels = [tok.decode_token(i) for i in ids]
    assert "".join(labels) == "Good morrow, neighbour"
    assert any(label.startswith(" ") and len(label) > 1 for label in labels)  # " morrow" or " m", not "Ġm"
    assert not any("Ġ" in label for label in display_tokens(labels))
    assert any(label.startswith("␣") for label in display_tokens(labels))  # spaces marked as the maps do
    # a byte that is part of a character is not text on its own: U+FFFD, as gpt2 shows it
    cafe = tok.encode("日")
    assert len(cafe) > 1 and tok.decode_token(cafe[0]) == "\ufffd"


# ---------------------------------------------------------------------------------------------- preparation


def test_the_tokenizer_is_trained_on_the_train_split_only(tmp_path):
    # a word repeated only in the last tenth (val) gets no merges; one repeated in train becomes a token
    corpus = tmp_path / "c.txt"
    corpus.write_text("wxyzq " * 3000 + "hello there\n" * 100 + "kvjbp " * 200, encoding="utf-8")  # val: the last 10%
    tok = prepare(_cfg(tmp_path, corpus, vocab_size=270), progress=False).tokenizer
    assert len(tok.encode(" wxyzq")) == 1
    assert len(tok.encode(" kvjbp")) == len(" kvjbp")


def test_rerun_reuses_and_a_lost_or_damaged_tokenizer_file_is_rebuilt(tmp_path):
    corpus = tmp_path / "part.txt"
    corpus.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:200_000], encoding="utf-8")
    cfg = _cfg(tmp_path, corpus, vocab_size=300)
    first = prepare(cfg, progress=False)
    tokenizer_file = first.dir / "tokenizer.json"
    sha = _sha256(tokenizer_file)
    assert first.meta["tokenizer"]["sha256"] == sha and first.meta["tokenizer"]["file"] == "tokenizer.json"
    assert prepare(cfg, progress=False).reused
    for damage in (lambda f: f.unlink(), lambda f: f.write_bytes(f.read_bytes()[:1000])):
        damage(tokenizer_file)
        with pytest.raises(DataError, match="tokenizer.json (is missing|is not the tokenizer meta.json)"):
            load_prepared(first.dir)
        again = prepare(cfg, progress=False)
        assert not again.reused and _sha256(tokenizer_file) == sha  # trained again, to the same tokenizer
    # another vocabulary is another cache folder; the first is kept
    other = prepare(_cfg(tmp_path, corpus, vocab_size=301), progress=False)
    assert other.dir != first.dir and other.tokenizer.vocab_size == 301 and prepare(cfg, progress=False).reused


def _mixed_corpus(folder: Path) -> Path:
    """Four documents of 1- to 4-byte characters with "\\r\\n" and "\\r" line ends, one in a subfolder."""
    words = ["the", "quick", "café", "naïve", "日本語", "🙂", "it's", "end.", "A", "x\n", "  "]
    rng = np.random.default_rng(0)
    for i in range(4):
        lines = [" ".join(rng.choice(words, rng.integers(1, 12))) for _ in range(80)]
        path = folder / ("sub" if i == 3 else "") / f"doc{i}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes("".join(line + ("\r\n" if i % 2 else "\r") for line in lines).encode())
    return folder


def test_token_files_are_the_same_for_any_workers_blocks_and_pieces(tmp_path, monkeypatch):
    folder = _mixed_corpus(tmp_path / "mixed")
    monkeypatch.setattr(data_module.os, "cpu_count", lambda: 2)
    runs = [
        dict(),
        dict(block_bytes=1, piece_chars=16),
        dict(block_bytes=3, piece_chars=64),
        dict(parallel_min_chars=0, piece_chars=16),  # two worker processes, pieces cut at every safe place
    ]
    files = []
    for i, kw in enumerate(runs):
        cfg = DataConfig(path=str(folder), tokenizer="bpe", vocab_size=300, cache_dir=str(tmp_path / f"c{i}"))
        data = prepare(cfg, progress=False, **kw)
        files.append([_sha256(data.dir / name) for name in ("tokenizer.json", "train.bin", "val.bin")])
    assert all(f == files[0] for f in files[1:]), files
    texts = [p.read_text(encoding="utf-8") for p in sorted(folder.rglob("*.txt"))]
    ids = np.concatenate([data.load_split("train"), data.load_split("val")]).tolist()
    assert data.tokenizer.decode(ids) == "<|endoftext|>".join(texts)  # documents split by the end-of-text token
    assert ids.count(data.tokenizer.eot_id) == len(texts) - 1


def test_training_runs_in_a_child_process_whose_result_or_error_comes_back():
    import os

    assert data_module._in_child(lambda: f"from {os.getpid()}") != f"from {os.getpid()}"  # another process
    with pytest.raises(DataError, match="^no pairs"):

        def fail() -> str:
            raise DataError("no pairs")

        data_module._in_child(fail)
    with pytest.raises(DataError, match="ended with exit code 3; run again"):
        data_module._in_child(lambda: os._exit(3))


def test_bad_vocabulary_sizes_are_one_line(tmp_path):
    with pytest.raises(ValueError, match=r"^data.vocab_size=256 is too small: .* at least 257"):
        DataConfig(tokenizer="bpe", vocab_size=256)
    corpus = tmp_path / "small.txt"
    corpus.write_text("to be or not to be\n" * 40, encoding="utf-8")
    with pytest.raises(DataError, match=r"supports at most (\d+) bpe tokens .*set data.vocab_size=\1 or less"):
        prepare(_cfg(tmp_path, corpus, vocab_size=5000), progress=False)
    assert not (tmp_path / "cache" / "small-bpe5000" / "meta.json").exists()


def test_prepare_py_errors_are_one_line(tmp_path):
    corpus = tmp_path / "small.txt"
    corpus.write_text("to be or not to be\n" * 40, encoding="utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("café\n".encode("latin-1") * 10)
    cases = [
        (corpus, 5000, "supports at most"),
        (latin, 300, "is not UTF-8 text"),
    ]
    for path, vocab, message in cases:
        flags = [f"--data.path={path}", "--data.tokenizer=bpe", f"--data.vocab_size={vocab}"]
        command = [sys.executable, str(ROOT / "data" / "prepare.py"), *flags, f"--data.cache_dir={tmp_path / 'cache'}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and message in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------- everywhere else


def _tiny_model(vocab_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(vocab_size=vocab_size, block_size=32, n_layer=2, n_head=2, n_embd=32)).eval()


def test_sample_py_needs_only_the_checkpoint(shakespeare_bpe, tmp_path, capsys):
    from minigpt.sample_cli import main

    tok = shakespeare_bpe.tokenizer
    model = _tiny_model(tok.vocab_size)
    cfg = RunConfig(model=model.config, data=DataConfig(tokenizer="bpe", vocab_size=512, cache_dir=str(tmp_path)))
    payload = {
        "model": model.state_dict(),
        "config": to_dict(cfg),
        "tokenizer": tok.to_dict(),
        "iter": 1,
        "best_val_loss": 3.0,
    }
    save_checkpoint(tmp_path / "runs/r/ckpt_best.pt", payload)
    prompt = ["--run", str(tmp_path / "runs/r"), "--prompt", "Good morrow<|endoftext|>"]
    assert main([*prompt, "--max_new_tokens", "5", "--seed", "0"]) == 0
    out, err = capsys.readouterr()
    assert "bpe tokenizer (vocab 512)" in err and out.startswith("Good morrow<|endoftext|>") and len(out) > 25
    assert main([*prompt, "--attention"]) == 0
    n_prompt = len(tok.encode("Good morrow")) + 1  # <|endoftext|> is one token
    assert f"attention maps: {n_prompt} tokens" in capsys.readouterr().out


def test_head_roles_run_on_a_bpe_vocabulary(shakespeare_bpe):
    tok = shakespeare_bpe.tokenizer
    model = _tiny_model(tok.vocab_size)
    probe = torch.tensor(tok.encode("First Citizen:\nBefore we proceed any further, hear me speak.")[:32])
    probes = role_probes(probe, shakespeare_bpe.load_split("train"), tok.vocab_size, 32)
    induction = probes.induction
    half = induction.shape[1] // 2
    assert torch.equal(induction[:, :half], induction[:, half:])  # a sequence, then the same again
    counts = np.bincount(shakespeare_bpe.load_split("train"), minlength=512)
    assert (counts[induction] > 100).all() and (counts == 0).sum() > 50  # tokens the text uses, of a vocabulary
    scores = head_roles(model, probes.text, probes.induction)
    for role in ("previous_token", "first_token", "self", "induction"):  # duplicate_token: nan without repeats
        assert scores[role].shape == (2, 2) and 0.0 <= float(scores[role].min()) <= float(scores[role].max()) <= 1.0


def test_params_counts_the_bpe_vocabulary_of_a_config_file(tmp_path, capsys):
    from minigpt.params_cli import main

    config = tmp_path / "bpe.toml"
    config.write_text('[data]\ntokenizer = "bpe"\nvocab_size = 2048\n', encoding="utf-8")
    assert main([str(config)]) == 0
    table = capsys.readouterr().out
    assert "262,144" in table  # 2048 x 128: the default model's embedding at that vocabulary
    config.write_text('[data]\ntokenizer = "bpe"\nvocab_size = 2048\n[model]\nvocab_size = 300\n', encoding="utf-8")
    assert main([str(config)]) == 0  # a run's config.toml states model.vocab_size; it wins
    assert "38,400" in capsys.readouterr().out


def test_a_big_vocabulary_is_pointed_to_bpe():
    warning = vocabulary_warning(RunConfig(model=ModelConfig(vocab_size=50257)))
    assert warning is not None and "--data.tokenizer=bpe --data.vocab_size=4096" in warning
    assert vocabulary_warning(RunConfig(model=ModelConfig(vocab_size=4096))) is None  # 40% embedding


def test_export_loads_in_transformers_with_equal_tokens_and_logits(shakespeare_bpe, tmp_path):
    transformers = pytest.importorskip("transformers")
    from minigpt import hf

    tok = shakespeare_bpe.tokenizer
    model = _tiny_model(tok.vocab_size)
    out = hf.export(model, tok, tmp_path / "export")
    assert json.loads((out / "tokenizer.json").read_text(encoding="utf-8")) == json.loads(tok.to_json())
    theirs_tok = transformers.AutoTokenizer.from_pretrained(out)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    text = "First Citizen:\nBefore we proceed any further, hear me speak.  Ünïcödé 🙂 12345\r\n\t'tis"
    ids = theirs_tok.encode(text)
    assert ids == tok.encode(text) and theirs_tok.decode(ids) == text
    assert theirs_tok.eos_token_id == tok.eot_id == theirs.config.eos_token_id
    x = torch.tensor([ids[:32]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, model(x)[0], atol=1e-5, rtol=0)


def test_bench_prepare_trains_a_bpe_first(tmp_path, monkeypatch):
    import tempfile

    from minigpt.bench import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    out_json = tmp_path / "bench.json"
    assert main(["prepare", "--corpus_gb", "0.001", "--tokenizer", "bpe:400", f"--json={out_json}"]) == 0
    (row,) = json.loads(out_json.read_text())["results"]["prepare"]
    assert row["tokenizer"] == "bpe:400" and 0 < row["train_tokenizer_s"] < row["wall_s"] and row["tokens"] > 0
    assert main(["prepare", "--corpus_gb", "0.001", "--tokenizer", "bpe"]) == 2


def test_train_resume_and_params_with_a_bpe_run(tmp_path, capsys):
    import io
    import shutil

    from minigpt import cli
    from minigpt.params_cli import main as params_main
    from minigpt.run import from_argv, train

    corpus = tmp_path / "part.txt"
    corpus.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:100_000], encoding="utf-8")
    args = [
        f"--data.path={corpus}",
        "--data.tokenizer=bpe",
        "--data.vocab_size=400",
        f"--data.cache_dir={tmp_path / 'cache'}",
        f"--train.out_dir={tmp_path / 'runs'}",
        "--train.run_name=r",
        "--model.n_layer=1",
        "--model.n_embd=16",
        "--model.n_head=2",
        "--model.block_size=16",
        "--train.batch_size=2",
        "--train.eval_iters=1",
        "--train.eval_interval=2",
        "--log.sample_tokens=0",
        "--log.no_tensorboard",
        "--log.no_progress",
        "--train.device=cpu",
    ]
    assert train(cli.parse(RunConfig, [*args, "--train.max_iters=2"], prog="train.py"), out=io.StringIO())["iter"] == 2
    # the run's config.toml states the vocabulary, so params counts the embedding the run has: 400 x 16
    assert params_main([str(tmp_path / "runs/r/config.toml")]) == 0
    assert "6,400" in capsys.readouterr().out
    # with the cache gone, the tokenizer is trained again, to the same one: the resume is accepted
    shutil.rmtree(tmp_path / "cache")
    assert train(*from_argv([*args, "--train.max_iters=4", "--resume"]), out=io.StringIO())["iter"] == 4
