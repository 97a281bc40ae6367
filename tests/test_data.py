"""Data preparation (splits, cache, bad input) and batch sampling."""

import dataclasses
import errno
import hashlib
import io
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from minigpt import data as data_module
from minigpt.config import DataConfig
from minigpt.data import BatchSampler, DataError, eval_batches, load_prepared, prepare, token_dtype
from minigpt.tokenizer import CharTokenizer, GPT2Tokenizer

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "shakespeare" / "input.txt"
# sha256 of the token files that minigpt wrote for the shipped corpus before data.py was rewritten;
# a rewrite of prepare() must give the same bytes.
REFERENCE_SHA256 = {
    "char": {
        "train.bin": "6ec305602a99ac2802745a134e1f5e33e2231b4855525b00b9aebb730ac2626f",
        "val.bin": "d37d30cc0c8327c270d493299c3dca54135f6d5f1c9ef60cda78076e311204b1",
        "meta.json": "beac9227a0aafe7478972c270d5f4f7893e04cc8b05a7708366a660b705e4392",
    },
    "gpt2": {
        "train.bin": "502a2bdc8210d1ac5d5674867cb74467dd31db575d25cf6dbb08c8bdbea8680f",
        "val.bin": "68a53422394c26a655ebe641f5c6f49888e8f4e45fe5d6f02abda63ba3ebd65b",
        "meta.json": "9e58bb3a24db12b715403be0a777a111370b6752eadb24591dded6c2af0949df",
    },
}


def _cfg(tmp_path: Path, path: Path | str = SHAKESPEARE, **kw) -> DataConfig:
    return DataConfig(path=str(path), cache_dir=str(tmp_path / "cache"), **kw)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8"))
    return path


def _stamps(directory: Path) -> dict[str, tuple[int, int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes()) for p in sorted(directory.iterdir())}


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything tries to open a connection or resolve a name."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Tiny Shakespeare prepared with both tokenizers, once for this module."""
    cache = tmp_path_factory.mktemp("shared")
    return {kind: prepare(_cfg(cache, tokenizer=kind), progress=False) for kind in ("char", "gpt2")}


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_and_frozen():
    cfg = DataConfig()
    assert (cfg.path, cfg.tokenizer, cfg.val_fraction, cfg.hf_dataset) == ("data/shakespeare/input.txt", "char", 0.1, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.path = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"val_fraction": 0.0}, r"^data.val_fraction=0.0 must be between 0 and 1 .*data.val_fraction=0.1"),
        ({"val_fraction": 1.5}, r"^data.val_fraction=1.5"),
        ({"tokenizer": "wordpiece"}, r"^data.tokenizer='wordpiece' is not a tokenizer; choose one of char, gpt2"),
        ({"path": ""}, r"^data.path is empty"),
        ({"hf_dataset": "x", "hf_split": " "}, r"^data.hf_split is empty"),
        ({"workers": -1}, r"^data.workers=-1 must be 0 \(one per CPU core\) or a positive number"),
    ],
)
def test_config_validation_names_the_field(kw, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kw)


def test_errors_name_fields_not_flags():
    # The library speaks in config fields (data.path); only the command line turns them into flags.
    for module in ("data.py", "tokenizer.py"):
        source = (Path(__file__).resolve().parent.parent / "minigpt" / module).read_text()
        assert "--data." not in source and "--model." not in source, module


# ---------------------------------------------------------------------------------------------- shakespeare


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_shakespeare_token_files_match_the_reference(prepared, kind):
    data, reference = prepared[kind], REFERENCE_SHA256[kind]
    assert _sha256(data.dir / "train.bin") == reference["train.bin"]
    assert _sha256(data.dir / "val.bin") == reference["val.bin"]
    # meta.json records data.path as given; the reference was written with the default, relative path
    meta = json.loads((data.dir / "meta.json").read_text())
    meta["source"]["path"] = DataConfig().path
    assert hashlib.sha256((json.dumps(meta, indent=2) + "\n").encode()).hexdigest() == reference["meta.json"]


def test_char_shakespeare_counts(prepared, shakespeare):
    data = prepared["char"]
    n = len(shakespeare)
    assert data.dir.name == "shakespeare-input-char"
    assert data.meta["vocab_size"] == data.tokenizer.vocab_size == 65
    assert data.meta["dtype"] == "uint16"
    assert data.meta["train_tokens"] == int(0.9 * n) == 1_003_854
    assert data.meta["val_tokens"] == n - int(0.9 * n)
    assert data.meta["source"]["sha256"] == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    train, val = data.load_split("train"), data.load_split("val")
    assert isinstance(train, np.memmap) and train.dtype == np.uint16
    assert data.tokenizer.decode(train.tolist()) == shakespeare[: int(0.9 * n)]
    assert data.tokenizer.decode(val.tolist()) == shakespeare[int(0.9 * n) :]


def test_gpt2_shakespeare_counts(prepared, shakespeare):
    data = prepared["gpt2"]
    assert data.dir.name == "shakespeare-input-gpt2"
    assert (data.meta["train_tokens"], data.meta["val_tokens"]) == (301_966, 36_059)
    assert data.meta["vocab_size"] == 50257 and data.meta["dtype"] == "uint16"
    train, val = data.load_split("train"), data.load_split("val")
    assert data.tokenizer.decode(train.tolist()) + data.tokenizer.decode(val.tolist()) == shakespeare
    meta = json.loads((data.dir / "meta.json").read_text())
    assert meta == data.meta and meta["format_version"] == data_module.FORMAT_VERSION


def test_probe_tokens_are_start_of_val(prepared):
    data = prepared["gpt2"]
    probe = data.probe_tokens(64)
    assert probe.dtype == np.int64 and probe.shape == (64,)
    np.testing.assert_array_equal(probe, data.load_split("val")[:64])


def test_prepare_local_file_makes_no_network_call(tmp_path, no_network):
    corpus = _write(tmp_path / "tiny.txt", "hello world\n" * 20)
    data = prepare(_cfg(tmp_path, corpus, tokenizer="gpt2"), progress=False)
    assert data.meta["train_tokens"] > 0
    # only the three files: no datasets caches or temporary files left behind
    assert sorted(p.name for p in data.dir.iterdir() if p.name != ".lock") == ["meta.json", "train.bin", "val.bin"]


# ---------------------------------------------------------------------------------------------- idempotence


def test_prepare_is_idempotent(tmp_path):
    corpus = _write(tmp_path / "notes" / "story.txt", "Once upon a time.\nThe end.\n" * 30)
    first = prepare(_cfg(tmp_path, corpus), progress=False)
    assert first.dir == tmp_path / "cache" / "notes-story-char" and not first.reused
    before = _stamps(first.dir)
    second = prepare(_cfg(tmp_path, corpus), progress=False)
    assert second.reused and second.meta == first.meta
    assert _stamps(second.dir) == before  # same inodes, mtimes and bytes: nothing rewritten


def test_prepare_rebuilds_on_changed_source_or_split(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    first = prepare(_cfg(tmp_path, corpus), progress=False)
    _write(corpus, "abcd\n" * 100)
    second = prepare(_cfg(tmp_path, corpus), progress=False)
    assert not second.reused and second.dir == first.dir
    assert second.meta["vocab_size"] == 5 and second.meta["train_tokens"] == int(0.9 * 500)
    third = prepare(_cfg(tmp_path, corpus, val_fraction=0.5), progress=False)
    assert not third.reused and third.meta["train_tokens"] == 250
    gpt2 = prepare(_cfg(tmp_path, corpus, tokenizer="gpt2"), progress=False)
    assert gpt2.dir != third.dir and gpt2.meta["tokenizer"]["kind"] == "gpt2"
    assert load_prepared(third.dir).meta == third.meta  # the char folder is untouched by gpt2


def test_interrupted_prepare_leaves_nothing_that_looks_valid(tmp_path, monkeypatch):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    prepare(_cfg(tmp_path, corpus), progress=False)
    _write(corpus, "xyz\n" * 100)
    real_replace = os.replace
    calls = []

    def dies_after_first_rename(src, dst):
        calls.append(dst)
        if len(calls) > 1:
            raise KeyboardInterrupt  # killed between renaming train.bin and val.bin
        real_replace(src, dst)

    monkeypatch.setattr(data_module.os, "replace", dies_after_first_rename)
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(tmp_path, corpus), progress=False)
    monkeypatch.setattr(data_module.os, "replace", real_replace)
    folder = data_module.cache_folder(_cfg(tmp_path, corpus))
    assert not (folder / "meta.json").exists()  # new train.bin + old val.bin: no meta, so not "prepared"
    assert not [p for p in folder.iterdir() if "tmp" in p.name]  # temporary files cleaned up
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    assert not data.reused and data.tokenizer.decode(data.load_split("train").tolist()).startswith("xyz\n")


def test_failed_rebuild_keeps_the_old_files(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    before = _stamps(data.dir)
    corpus.write_bytes(b"abc\n" * 90 + b"\xff\n" * 10)  # not UTF-8: rejected after reading
    with pytest.raises(DataError):
        prepare(_cfg(tmp_path, corpus), progress=False)
    assert _stamps(data.dir) == before


# ---------------------------------------------------------------------------------------------- folders, newlines


def test_folder_documents_are_separated(tmp_path):
    folder = tmp_path / "books"
    _write(folder / "b.txt", "second book " * 40)
    _write(folder / "a.txt", "first book " * 40)
    _write(folder / "sub" / "c.txt", "third book " * 40)
    _write(folder / "skip.md", "not a txt file")
    _write(folder / "empty.txt", "")
    gpt2 = prepare(_cfg(tmp_path, folder, tokenizer="gpt2"), progress=False)
    assert gpt2.meta["source"]["files"] == 4 and gpt2.dir.name == "books-gpt2"
    ids = np.concatenate([gpt2.load_split("train"), gpt2.load_split("val")]).tolist()
    assert ids.count(50256) == 2  # <|endoftext|> between the three non-empty documents
    text = gpt2.tokenizer.decode(ids)
    assert text.index("first") < text.index("second") < text.index("third")  # sorted by path

    char = prepare(_cfg(tmp_path, folder), progress=False)
    text = char.tokenizer.decode(np.concatenate([char.load_split("train"), char.load_split("val")]).tolist())
    assert text == ("first book " * 40) + "\n" + ("second book " * 40) + "\n" + ("third book " * 40)


def test_crlf_and_cr_read_as_newline(tmp_path):
    corpus = tmp_path / "dos.txt"
    corpus.write_bytes(b"line one\r\nline two\r\n" * 20)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    assert data.tokenizer.chars == "\n eilnotw"
    assert data.meta["train_tokens"] + data.meta["val_tokens"] == len("line one\nline two\n") * 20
    corpus.write_bytes(b"old mac\rline two\r\n" * 20)  # a lone "\r" too, as Python's text mode reads it
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    text = data.tokenizer.decode(np.concatenate([data.load_split("train"), data.load_split("val")]).tolist())
    assert text == "old mac\nline two\n" * 20


# ---------------------------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path, monkeypatch):
    with pytest.raises(DataError, match=r"corpus .*nope.txt does not exist; set data.path to an existing text file"):
        prepare(_cfg(tmp_path, tmp_path / "nope.txt"), progress=False)
    monkeypatch.chdir(tmp_path)
    where = re.escape(f"(relative to {tmp_path})")
    with pytest.raises(DataError, match=rf"corpus nope.txt does not exist {where}; set data.path"):
        prepare(_cfg(tmp_path, "nope.txt"), progress=False)
    assert not (tmp_path / "cache").exists()


def test_empty_file_and_folder(tmp_path):
    with pytest.raises(DataError, match=r"empty.txt is empty; pass a file"):
        prepare(_cfg(tmp_path, _write(tmp_path / "empty.txt", "")), progress=False)
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match=r"folder .*nothing has no files matching data.glob='\*\*/\*.txt'; change"):
        prepare(_cfg(tmp_path, tmp_path / "nothing"), progress=False)
    assert not (tmp_path / "cache").exists()


def test_not_utf8_names_byte_offset(tmp_path):
    corpus = tmp_path / "latin1.txt"
    corpus.write_bytes("hello wörld".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not UTF-8 text \(invalid start byte at byte offset 7\); conv"):
        prepare(_cfg(tmp_path, corpus), progress=False)
    corpus.write_bytes(b"ok" + "é".encode()[:1])  # cut inside a character at the end
    with pytest.raises(DataError, match=r"\(unexpected end of data at byte offset 2\)"):
        prepare(_cfg(tmp_path, corpus), progress=False)
    corpus.write_bytes("abcé".encode() + b"xyz\xff")  # a byte offset (8), not a character offset (7)
    with pytest.raises(DataError, match=r"at byte offset 8\)"):
        prepare(_cfg(tmp_path, corpus), progress=False)
    assert not (tmp_path / "cache").exists()  # checked before anything is written


def test_char_vocabulary_comes_from_all_of_the_text(tmp_path):
    # "The newcomer's path": a character only in val used to refuse the corpus; now it is in the vocabulary
    corpus = _write(tmp_path / "story.txt", "abc\n" * 90 + "é" * 40)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    assert data.tokenizer.chars == "\nabcé" and data.meta["vocab_size"] == 5
    assert "é" not in data.tokenizer.decode(data.load_split("train").tolist())
    assert data.tokenizer.decode(data.load_split("val").tolist()).endswith("é" * 40)


def test_split_too_short_for_block_size():
    tokens = np.arange(20, dtype=np.uint16)
    message = r"the val split has 20 tokens, fewer than block_size \+ 1 = 33; set model.block_size to 19 or less"
    with pytest.raises(DataError, match=message):
        BatchSampler(tokens, 4, 32, seed=0, split="val")
    BatchSampler(tokens, 4, 19, seed=0)  # 20 tokens hold exactly one window of 19 + 1


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(65) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32 and token_dtype(0x110000) == np.uint32  # every Unicode character


def test_corrupted_meta_is_an_error_and_nothing_is_overwritten(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    (data.dir / "meta.json").write_text("{not json")
    before = _stamps(data.dir)
    with pytest.raises(DataError, match=r"meta.json is corrupted \(JSONDecodeError\); delete the folder"):
        prepare(_cfg(tmp_path, corpus), progress=False)
    assert _stamps(data.dir) == before


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"train_tokens": 7}, r"train.bin does not match .*meta says 7 uint16 tokens"),
        ({"vocab_size": 70000}, r"says vocab_size 70000 and dtype 'uint16', but its tokenizer has 4 tokens"),
        ({"tokenizer": {"kind": "char", "chars": "a" * 70000}}, r"bad tokenizer"),
        ({"dtype": "uint8"}, r"dtype 'uint8', but its tokenizer has 4 tokens, stored as uint16"),
        ({"dtype": "uint32"}, r"dtype 'uint32', but its tokenizer has 4 tokens, stored as uint16"),
    ],
)
def test_mismatched_meta_is_an_error(tmp_path, change, message):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    (data.dir / "meta.json").write_text(json.dumps({**data.meta, **change}))
    before = _stamps(data.dir)
    with pytest.raises(DataError, match=message):
        prepare(_cfg(tmp_path, corpus), progress=False)
    assert _stamps(data.dir) == before


def test_other_format_version_is_rebuilt(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    (data.dir / "meta.json").write_text(json.dumps({**data.meta, "format_version": 0}))
    with pytest.raises(DataError, match=r"has format version 0, this minigpt reads 1; delete the folder"):
        load_prepared(data.dir)
    again = prepare(_cfg(tmp_path, corpus), progress=False)
    assert not again.reused and again.meta == data.meta


def test_vocab_too_large_for_meta_dtype(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    chars = "".join(chr(c) for c in range(0x100, 0x100 + 70000) if not 0xD800 <= c < 0xE000)
    (data.dir / "meta.json").write_text(json.dumps({**data.meta, "tokenizer": {"kind": "char", "chars": chars},
                                                    "vocab_size": len(chars)}))
    with pytest.raises(DataError, match=r"dtype 'uint16', but its tokenizer has 67952 tokens, stored as uint32"):
        load_prepared(data.dir)


def test_offline_hub_dataset_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"hub dataset 'user/corpus' needs the network but HF_HUB_OFFLINE is set"):
        prepare(_cfg(tmp_path, hf_dataset="user/corpus"), progress=False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(DataError, match=r"needs the network but huggingface.co cannot be reached"):
        prepare(_cfg(tmp_path, hf_dataset="user/corpus"), progress=False)
    assert time.perf_counter() - start < 5
    assert not (tmp_path / "cache").exists()


def test_prepared_hub_dataset_is_reused_offline(tmp_path, monkeypatch, no_network):
    # A folder prepared earlier (here: written by hand) is found by name, with no network.
    cfg = _cfg(tmp_path, hf_dataset="user/corpus", hf_split="train", tokenizer="gpt2")
    folder = data_module.cache_folder(cfg)
    assert folder.name == "user--corpus-train-gpt2"
    local = prepare(_cfg(tmp_path, _write(tmp_path / "c.txt", "hello world\n" * 50), tokenizer="gpt2"), progress=False)
    folder.mkdir(parents=True)
    for name in ("train.bin", "val.bin"):
        (folder / name).write_bytes((local.dir / name).read_bytes())
    meta = {**local.meta, "source": {**data_module._source(cfg)[1], "rows": 50}}
    (folder / "meta.json").write_text(json.dumps(meta))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert prepare(cfg, progress=False).reused


def test_hub_dataset_is_read_through_datasets(tmp_path, monkeypatch):
    # No network here: load_dataset is replaced by an in-memory dataset with the same interface.
    datasets = pytest.importorskip("datasets")
    rows = ["Once upon a time.\n", None, "", "The fox ran. " * 40, "The end."]
    calls = []

    def load_dataset(name, config, *, split, cache_dir):
        calls.append((name, config, split))
        return datasets.Dataset.from_dict({"story": rows, "id": list(range(len(rows)))})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", lambda address, timeout: socket.socket())  # "online"
    bars_were_off = datasets.are_progress_bars_disabled()
    cfg = _cfg(tmp_path, hf_dataset="user/stories", hf_split="validation", hf_text_column="story", tokenizer="gpt2")
    data = prepare(cfg, progress=False)
    assert calls == [("user/stories", None, "validation")]
    assert datasets.are_progress_bars_disabled() == bars_were_off  # restored after the call
    assert data.dir.name == "user--stories-validation-gpt2"
    assert data.meta["source"]["kind"] == "hf" and data.meta["source"]["rows"] == 3  # None and "" are skipped
    ids = np.concatenate([data.load_split("train"), data.load_split("val")]).tolist()
    assert ids.count(50256) == 2 and data.tokenizer.decode(ids) == "<|endoftext|>".join(r for r in rows if r)
    assert prepare(cfg, progress=False).reused and len(calls) == 1  # reused without loading it again

    with pytest.raises(DataError, match=r"has no column 'text' \(columns: story, id\); set data.hf_text_column"):
        prepare(dataclasses.replace(cfg, hf_text_column="text"), progress=False)
    rows[:] = [None, ""]
    with pytest.raises(DataError, match=r"'user/stories' has no text in column 'story'; check data.hf_text_column"):
        prepare(dataclasses.replace(cfg, hf_split="train"), progress=False)

    def fails(*args, **kwargs):
        raise FileNotFoundError("Dataset 'user/nope' doesn't exist on the Hub\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", fails)
    with pytest.raises(DataError, match=r"could not load hub dataset 'user/nope' .*: Dataset 'user/nope' doesn't exist "
                                        r"on the Hub; check data.hf_dataset"):  # fmt: skip
        prepare(dataclasses.replace(cfg, hf_dataset="user/nope"), progress=False)


# ---------------------------------------------------------------------------------------------- batches


def test_targets_are_inputs_shifted_by_one():
    tokens = np.arange(1000, dtype=np.uint16)  # token i sits at position i
    x, y = BatchSampler(tokens, batch_size=8, block_size=16, seed=0).next()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    torch.testing.assert_close(y, x + 1)
    torch.testing.assert_close(x, x[:, :1] + torch.arange(16))  # contiguous windows
    assert int(y.max()) <= 999


def test_batches_cover_the_whole_split():
    tokens = np.arange(12, dtype=np.uint16)
    sampler = BatchSampler(tokens, batch_size=64, block_size=4, seed=0)
    starts = {int(s) for _ in range(4) for s in sampler.next()[0][:, 0]}
    assert starts == set(range(12 - 4))  # every start from 0 to len - block_size - 1


def test_batches_deterministic_per_seed_and_rank(prepared):
    train = prepared["char"].load_split("train")
    a, b = (BatchSampler(train, 4, 32, seed=7) for _ in range(2))
    for _ in range(3):
        xa, ya = a.next()
        xb, yb = b.next()
        torch.testing.assert_close(xa, xb)
        torch.testing.assert_close(ya, yb)
    other_seed = BatchSampler(train, 4, 32, seed=8).next()[0]
    other_rank = BatchSampler(train, 4, 32, seed=7, rank=1, world_size=2).next()[0]
    first = BatchSampler(train, 4, 32, seed=7).next()[0]
    assert not torch.equal(first, other_seed) and not torch.equal(first, other_rank)
    with pytest.raises(ValueError, match="rank 2 is not in 0..1 for world_size 2"):
        BatchSampler(train, 4, 32, seed=7, rank=2, world_size=2)


def test_sampler_resumes_exactly_from_state(prepared):
    train = prepared["gpt2"].load_split("train")
    runs = [BatchSampler(train, 4, 16, seed=3, rank=rank, world_size=2) for rank in (0, 1)]
    for run in runs:
        for _ in range(5):
            run.next()
    # A checkpoint stores rank 0's state as plain data; it resumes every rank exactly.
    state = json.loads(json.dumps(runs[0].state_dict()))
    for rank, run in enumerate(runs):
        expected = [run.next() for _ in range(3)]
        resumed = BatchSampler(train, 4, 16, seed=3, rank=rank, world_size=2)
        resumed.load_state_dict(state)
        for (x, y), (ex, ey) in zip([resumed.next() for _ in range(3)], expected):
            torch.testing.assert_close(x, ex)
            torch.testing.assert_close(y, ey)
    with pytest.raises(ValueError, match="saved with seed 3, this sampler has seed 4"):
        BatchSampler(train, 4, 16, seed=4).load_state_dict(state)


def test_eval_batches_fixed_and_independent_of_training(prepared):
    val = prepared["char"].load_split("val")
    first = eval_batches(val, n_batches=3, batch_size=4, block_size=32)
    training = BatchSampler(val, 4, 32, seed=0)
    training.next()
    second = eval_batches(val, n_batches=3, batch_size=4, block_size=32)
    assert len(first) == 3
    for (x1, y1), (x2, y2) in zip(first, second):
        torch.testing.assert_close(x1, x2)
        torch.testing.assert_close(y1, y2)
        assert x1.shape == (4, 32)
    assert not torch.equal(first[0][0], first[1][0])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_on_cuda_match_cpu():
    tokens = np.arange(5000, dtype=np.uint16)
    x, y = BatchSampler(tokens, 8, 64, seed=1, device="cuda").next()
    cx, cy = BatchSampler(tokens, 8, 64, seed=1).next()
    assert x.device.type == "cuda" and x.dtype == torch.int64
    torch.testing.assert_close(x.cpu(), cx)
    torch.testing.assert_close(y.cpu(), cy)


@pytest.mark.parametrize("kind", ["char", "gpt2"])
def test_parallel_tokenizing_in_small_pieces_gives_the_same_files(tmp_path, monkeypatch, prepared, kind):
    # Large corpora are cut into pieces and tokenized by several processes; take that path on Shakespeare,
    # with pieces small enough that the text is cut at hundreds of places.
    monkeypatch.setattr(data_module.os, "cpu_count", lambda: 2)
    data = prepare(_cfg(tmp_path, tokenizer=kind), progress=False, parallel_min_chars=0, piece_chars=4096)
    for split in ("train", "val"):
        assert _sha256(data.dir / f"{split}.bin") == REFERENCE_SHA256[kind][f"{split}.bin"]
    assert sorted(p.name for p in data.dir.iterdir() if p.name != ".lock") == ["meta.json", "train.bin", "val.bin"]


# ---------------------------------------------------------------------------------------------- streaming

# sha256 of the token files that minigpt wrote for `_mixed_corpus` before preparation streamed (whole files
# read at once); streaming in blocks of any size must give the same bytes.
MIXED_SHA256 = {
    "char": ("f158dde763ae323e8e1fdf3a60e4e6e00d7cb95141b1ccdd422a7e6469765e6a",
             "49962bb03d526ffb5df115ab7e25cde9cd3d436ac23bed681465d0e994db0cbc"),
    "gpt2": ("1c6ba4f35032cf6ae808421571a298ec9b109d6ebb8b24314d460c9fffc1342e",
             "3941ba9bccffebfcba4b4eb8fd016c705d955bd6145792b620510e313b69aac5"),
}  # fmt: skip


def _mixed_corpus(folder: Path) -> Path:
    """Five documents of 1- to 4-byte characters with "\\n", "\\r\\n" and lone "\\r" line ends (one file ends in
    "\\r", one without a line end), one of them in a subfolder, and an empty file."""
    rng = random.Random(0)
    words = ["the", "quick", "café", "naïve", "日本語", "🙂", "Ελληνικά", "—", "it's", "end.", "A",
             "x\n"]  # fmt: skip
    for i in range(5):
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 12))) for _ in range(60)]
        text = "".join(line + rng.choice(["\n", "\r\n", "\r"]) for line in lines)
        text = text[:-1] if i == 2 else text + "\r" if i == 4 else text
        _write(folder / ("sub" if i == 3 else "") / f"doc{i}.txt", text)
    _write(folder / "empty.txt", "")
    return folder


@pytest.mark.parametrize("kind", ["char", "gpt2"])
@pytest.mark.parametrize("block_bytes", [1, 2, 3, 5, 1 << 20])
def test_blocks_of_any_size_give_the_same_files(tmp_path, kind, block_bytes):
    # Blocks of 1 to 5 bytes end inside 2-, 3- and 4-byte characters and between "\r" and "\n" many times;
    # pieces of 16 characters make the gpt2 path cut every line at its safe places.
    folder = _mixed_corpus(tmp_path / "mixed")
    data = prepare(_cfg(tmp_path, folder, tokenizer=kind), progress=False, block_bytes=block_bytes, piece_chars=16)
    assert (_sha256(data.dir / "train.bin"), _sha256(data.dir / "val.bin")) == MIXED_SHA256[kind]
    # the text is what Python's text mode reads, documents joined by the end-of-document token
    texts = [open(f, encoding="utf-8").read() for f in sorted(folder.rglob("*.txt")) if f.stat().st_size]
    if kind == "char":  # a newline ends each document but the last, unless it ends in one
        texts = [t if t.endswith("\n") or i == len(texts) - 1 else t + "\n" for i, t in enumerate(texts)]
    ids = np.concatenate([data.load_split("train"), data.load_split("val")]).tolist()
    assert data.tokenizer.decode(ids) == ("" if kind == "char" else "<|endoftext|>").join(texts)


def test_small_blocks_on_shakespeare_give_the_reference_files(tmp_path):
    data = prepare(_cfg(tmp_path, tokenizer="gpt2"), progress=False, block_bytes=4099, piece_chars=1000)
    for split in ("train", "val"):
        assert _sha256(data.dir / f"{split}.bin") == REFERENCE_SHA256["gpt2"][f"{split}.bin"]


def test_pieces_stay_small_in_a_document_without_line_breaks(tmp_path, monkeypatch):
    # One 2 MB line: the text encoded at once is a piece, not the document, and the pieces add up to it.
    words = "the cat sat on the mat, then it ran off. " * 50_000
    corpus = _write(tmp_path / "one_line.txt", words)
    real_encode, encoded = GPT2Tokenizer.encode, []

    def recorded(self, text):
        encoded.append(text)
        return real_encode(self, text)

    monkeypatch.setattr(GPT2Tokenizer, "encode", recorded)
    data = prepare(_cfg(tmp_path, corpus, tokenizer="gpt2"), progress=False, block_bytes=65536, piece_chars=4096)
    monkeypatch.undo()
    assert "".join(encoded) == words and len(encoded) > 100
    assert max(len(text) for text in encoded) < 2 * 4096
    assert data.meta["train_chars"] == int(len(words) * 0.9)
    ids = np.concatenate([data.load_split("train"), data.load_split("val")]).tolist()
    assert data.tokenizer.decode(ids) == words


def test_not_utf8_offset_counts_bytes_across_blocks(tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes("aé日🙂".encode() + b"\xff")  # 1 + 2 + 3 + 4 bytes, then a bad byte at offset 10
    with pytest.raises(DataError, match=r"bad.txt is not UTF-8 text \(invalid start byte at byte offset 10\)"):
        prepare(_cfg(tmp_path, corpus), progress=False, block_bytes=3)
    corpus.write_bytes("aé日🙂".encode()[:-1])  # cut inside the last character
    with pytest.raises(DataError, match=r"\(unexpected end of data at byte offset 6\)"):
        prepare(_cfg(tmp_path, corpus), progress=False, block_bytes=3)


def test_interrupted_writing_leaves_the_old_files_and_a_rerun_rebuilds(tmp_path, monkeypatch):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 2000)
    old = prepare(_cfg(tmp_path, corpus), progress=False)
    before = {k: v for k, v in _stamps(old.dir).items() if k != ".lock"}
    _write(corpus, "xyz\n" * 2000)
    real_encode, calls = CharTokenizer.encode, []

    def dies_midway(self, text):
        calls.append(1)
        if len(calls) == 40:
            raise KeyboardInterrupt  # Ctrl-C while token files are being written (80 pieces of 100 characters)
        return real_encode(self, text)

    monkeypatch.setattr(CharTokenizer, "encode", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        prepare(_cfg(tmp_path, corpus), progress=False, piece_chars=100)
    monkeypatch.undo()
    # the old files and their meta.json are untouched and still agree; no half-written file is left
    assert {k: v for k, v in _stamps(old.dir).items() if k != ".lock"} == before
    assert load_prepared(old.dir).meta == old.meta
    # a run killed outright leaves its temporary files; the next run removes them
    (old.dir / "train.bin.tmp-99999").write_bytes(b"\0" * 10)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    assert not data.reused and data.tokenizer.decode(data.load_split("val").tolist()).endswith("xyz\n")
    assert sorted(p.name for p in data.dir.iterdir()) == [".lock", "meta.json", "train.bin", "val.bin"]


def test_too_little_disk_space_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 1000)
    monkeypatch.setattr(data_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 5000))
    message = (r"^not enough disk space in .*story-char: the token files need about 0.0 MB, 0.0 MB is free; "
               r"free some space or set data.cache_dir to a bigger disk$")  # fmt: skip
    with pytest.raises(DataError, match=message) as error:
        prepare(_cfg(tmp_path, corpus), progress=False)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "cache").exists()
    monkeypatch.setattr(data_module.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 8002))
    assert prepare(_cfg(tmp_path, corpus), progress=False).meta["train_tokens"] == 3600  # 4000 chars need 8000 bytes


def test_a_disk_that_fills_up_while_writing_is_one_line(tmp_path, monkeypatch):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 1000)

    def fills_up(fd):  # the disk fills up as the written token files are flushed to it
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_module.os, "fsync", fills_up)
    message = r"^the disk holding .*story-char is full; free some space or set data.cache_dir"
    with pytest.raises(DataError, match=message):
        prepare(_cfg(tmp_path, corpus), progress=False)
    folder = data_module.cache_folder(_cfg(tmp_path, corpus))
    assert sorted(p.name for p in folder.iterdir()) == [".lock"]  # temporary files removed, nothing looks prepared


def test_workers_use_every_core_unless_capped(tmp_path, monkeypatch):
    # the processes each prepare starts, on a corpus it takes as large (parallel_min_chars=0) or not
    real_pool, started = data_module.ProcessPoolExecutor, []

    def pool(workers, **kwargs):
        started.append(workers)
        return real_pool(workers, **kwargs)

    monkeypatch.setattr(data_module, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(data_module.os, "cpu_count", lambda: 4)
    corpus = _write(tmp_path / "story.txt", "abc\n" * 2000)
    for workers in (0, 2, 16):
        data = prepare(_cfg(tmp_path / str(workers), corpus, workers=workers), progress=False, parallel_min_chars=0)
        assert data.tokenizer.decode(data.load_split("val").tolist()).endswith("abc\n")
    assert started == [4, 2, 4]
    prepare(_cfg(tmp_path / "small", corpus), progress=False)  # a small corpus: processes would cost more than they save
    assert started == [4, 2, 4]


def test_bench_prepare_reports_time_tokens_and_memory(tmp_path, monkeypatch):
    from minigpt.bench import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the synthetic corpus goes
    out_json = tmp_path / "bench.json"
    assert main(["prepare", "--corpus_gb", "0.002", "--tokenizer", "char", f"--json={out_json}"]) == 0
    (row,) = json.loads(out_json.read_text())["results"]["prepare"]
    assert row["corpus"] == "0.002 GB, 1 file(s)" and row["tokenizer"] == "char"
    assert 1_500_000 < row["tokens"] <= 2_000_000 and row["wall_s"] > 0 and row["tokens_per_s"] > 0
    assert row["peak_rss_largest"].endswith("B")
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # the corpus and its cache are deleted


# ---------------------------------------------------------------------------------------------- faults, round two

PREPARE = Path(__file__).resolve().parent.parent / "data" / "prepare.py"


def _as_plain_user(command: list[str]) -> list[str]:
    """`command` run without the right to read or write what file modes forbid. We may run as root, whom
    chmod does not stop, so root drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH with setpriv."""
    if os.geteuid() != 0:
        return command
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    with tempfile.NamedTemporaryFile() as probe:
        os.chmod(probe.name, 0)
        runs = shutil.which("setpriv") and subprocess.run([*drop, "true"], capture_output=True).returncode == 0
        if not runs or subprocess.run([*drop, "cat", probe.name], capture_output=True).returncode == 0:
            pytest.skip("running as root without setpriv able to drop CAP_DAC_OVERRIDE, so file modes stop nothing")
    return [*drop, *command]


def _prepare_as_plain_user(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = _as_plain_user([sys.executable, str(PREPARE), f"--data.cache_dir={tmp_path / 'cache'}", *args])
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _one_line_error(done: subprocess.CompletedProcess, code: int, message: str) -> None:
    assert done.returncode == code, done.stderr
    assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert re.search(message, done.stderr), done.stderr


def test_token_ids_outside_the_vocabulary_are_refused_before_training(tmp_path):
    # "Faults, round two": random bytes of the right size, or one bad id, once gave an IndexError deep into a run
    corpus = _write(tmp_path / "story.txt", "Once upon a time.\n" * 200)
    cfg = _cfg(tmp_path, corpus)
    data = prepare(cfg, progress=False)
    train_bin = data.dir / "train.bin"
    noise = np.random.default_rng(0).integers(0, 256, train_bin.stat().st_size, dtype=np.uint8)
    train_bin.write_bytes(noise.tobytes())
    message = r"train.bin holds token id \d+ at position \d+, outside the vocabulary of 14; delete the folder"
    with pytest.raises(DataError, match=message):
        prepare(cfg, progress=False)
    with pytest.raises(DataError, match=message):
        load_prepared(data.dir)

    gpt2 = prepare(_cfg(tmp_path, corpus, tokenizer="gpt2"), progress=False)
    val = np.fromfile(gpt2.dir / "val.bin", dtype=np.uint16)
    val[7] = 50257  # one past <|endoftext|>
    val.tofile(gpt2.dir / "val.bin")
    with pytest.raises(DataError, match=r"val.bin holds token id 50257 at position 7, outside the vocabulary of 50257"):
        prepare(_cfg(tmp_path, corpus, tokenizer="gpt2"), progress=False)


def test_train_py_refuses_corrupt_token_ids_in_one_line(tmp_path, capsys):
    from minigpt.run import main
    from tests.test_run import tiny_args

    corpus = _write(tmp_path / "story.txt", "Once upon a time.\n" * 200)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    ids = np.fromfile(data.dir / "train.bin", dtype=np.uint16)
    ids[-1] = 999
    ids.tofile(data.dir / "train.bin")
    assert main(tiny_args(corpus, tmp_path)) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: .*train.bin holds token id 999 at position [\d,]+, outside .* rebuild it\n", err), err


def test_checking_token_ids_reads_in_chunks(tmp_path):
    # a bad id in the last of several chunks is found, at its position in the whole file
    ids = np.zeros(1000, dtype=np.uint16)
    ids[934] = 65
    ids.tofile(tmp_path / "train.bin")
    data = data_module.PreparedData(dir=tmp_path, meta={"train_tokens": 1000, "dtype": "uint16"}, tokenizer=None)
    with pytest.raises(DataError, match=r"train.bin holds token id 65 at position 934"):
        data_module._check_ids(data, "train", 65, chunk_tokens=100)
    data_module._check_ids(data, "train", 66, chunk_tokens=100)
    np.full(1000, 65535, dtype=np.uint16).tofile(tmp_path / "train.bin")
    data_module._check_ids(data, "train", 65536)  # every value is an id


def test_checking_token_ids_keeps_little_of_the_file_resident(tmp_path):
    # Pages read through one map of a whole token file stay in the process's resident memory until it is
    # unmapped: the check of a 3 GB corpus's 1.7 GB of token files peaked at 1.3 GB that way.
    np.zeros(100 << 20, dtype=np.uint16).tofile(tmp_path / "train.bin")  # 200 MiB
    code = (
        "import resource, sys; from pathlib import Path; from minigpt import data; "
        "prepared = data.PreparedData(Path(sys.argv[1]), {'train_tokens': 100 << 20, 'dtype': 'uint16'}, None); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "data._check_ids(prepared, 'train', 65, chunk_tokens=1 << 22); "
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)"  # KiB on Linux
    )
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert int(run.stdout) < 50, f"{run.stdout.strip()} MiB of a 200 MiB file stayed resident"


def test_a_symlink_loop_or_a_dangling_link_is_named_as_such(tmp_path):
    loop = tmp_path / "loop.txt"
    loop.symlink_to("loop.txt")
    with pytest.raises(DataError, match=r"cannot read corpus .*loop.txt: Too many levels of symbolic links; set data"):
        prepare(_cfg(tmp_path, loop), progress=False)
    dangling = tmp_path / "gone.txt"
    dangling.symlink_to(tmp_path / "deleted.txt")
    with pytest.raises(DataError, match=r"gone.txt is a symbolic link to .*deleted.txt, which does not exist"):
        prepare(_cfg(tmp_path, dangling), progress=False)


def test_unreadable_corpus_is_one_line(tmp_path):
    corpus = _write(tmp_path / "secret.txt", "hello world\n" * 50)
    corpus.chmod(0)
    done = _prepare_as_plain_user(tmp_path, f"--data.path={corpus}")
    _one_line_error(done, 2, r"^error: cannot read .*secret.txt: Permission denied; make it readable")


def test_unreadable_file_in_a_folder_corpus_is_one_line_in_train_py(tmp_path):
    folder = tmp_path / "notes"
    _write(folder / "a.txt", "hello world\n" * 50)
    _write(folder / "b.txt", "goodbye world\n" * 50).chmod(0)
    from tests.test_run import tiny_args

    command = _as_plain_user([sys.executable, str(PREPARE.parent.parent / "train.py"), *tiny_args(folder, tmp_path)])
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    # a read fault, not "could not write ... the last good checkpoint is untouched"
    _one_line_error(done, 2, r"^error: cannot read .*notes/b.txt: Permission denied")


def test_unreadable_subfolder_is_refused_not_skipped(tmp_path):
    folder = tmp_path / "notes"
    _write(folder / "a.txt", "hello world\n" * 50)
    _write(folder / "private" / "b.txt", "the text that would be left out\n" * 50)
    (folder / "private").chmod(0)
    try:
        done = _prepare_as_plain_user(tmp_path, f"--data.path={folder}")
        _one_line_error(done, 2, r"^error: cannot read folder .*notes/private: Permission denied; make it readable")
        # a glob that cannot reach it prepares the rest
        done = _prepare_as_plain_user(tmp_path, f"--data.path={folder}", "--data.glob=*.txt")
        assert done.returncode == 0, done.stderr
    finally:
        (folder / "private").chmod(0o755)  # so that pytest can delete it


def test_read_only_cache_that_needs_a_rebuild_is_one_line(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    data = prepare(_cfg(tmp_path, corpus), progress=False)
    before = _stamps(data.dir)
    _write(corpus, "abcd\n" * 100)
    data.dir.chmod(0o555)
    try:
        done = _prepare_as_plain_user(tmp_path, f"--data.path={corpus}")
        _one_line_error(done, 2, r"^error: cannot write the data cache .*story-char \(Permission denied\); make it")
        assert _stamps(data.dir) == before | {".lock": _stamps(data.dir)[".lock"]}  # only the lock was taken
        _write(corpus, "abc\n" * 100)  # unchanged source: a read-only cache is reused
        assert _prepare_as_plain_user(tmp_path, f"--data.path={corpus}").returncode == 0
    finally:
        data.dir.chmod(0o755)


def test_prepare_py_handles_a_reader_that_leaves(tmp_path):
    corpus = _write(tmp_path / "story.txt", "abc\n" * 100)
    command = [sys.executable, str(PREPARE), f"--data.path={corpus}", f"--data.cache_dir={tmp_path / 'cache'}"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # the reader is gone before anything is printed
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    # "The newcomer's path": prepare's bars were redrawn into log files
    shown = []
    real_tqdm = data_module.tqdm

    def bar(*args, **kwargs):
        shown.append(not kwargs.get("disable", False))
        return real_tqdm(*args, **kwargs)

    monkeypatch.setattr(data_module, "tqdm", bar)
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file
    prepare(_cfg(tmp_path, _write(tmp_path / "story.txt", "abc\n" * 100)), progress=True)
    assert shown and not any(shown)


def test_glob_picks_the_files_of_a_folder_and_skips_binary_ones(tmp_path):
    # "The newcomer's path": a folder of Python sources once gave "has no .txt files"
    folder = tmp_path / "src"
    _write(folder / "pkg" / "a.py", "def a():\n    return 1\n" * 30)
    _write(folder / "b.py", "def b():\n    return 2\n" * 30)
    _write(folder / "notes.txt", "not code\n" * 30)
    (folder / "pkg" / "blob.py").write_bytes(b"def c():\n" + b"\0\1\2" * 100)  # binary: a NUL byte early on
    (folder / "latin1.py").write_bytes("# é\n".encode("latin-1") * 30)  # not UTF-8
    cfg = _cfg(tmp_path, folder, glob="**/*.py")
    data = prepare(cfg, progress=False)
    assert data.dir.name == "src-py-char"  # the glob is part of the cache folder's name
    source = data.meta["source"]
    assert (source["glob"], source["files"], source["skipped"]) == ("**/*.py", 4, 2)
    assert source["skipped_example"] == "latin1.py"  # the first in sorted order
    text = data.tokenizer.decode(np.concatenate([data.load_split("train"), data.load_split("val")]).tolist())
    assert text == "def b():\n    return 2\n" * 30 + "def a():\n    return 1\n" * 30  # b.py sorts before pkg/a.py
    note = f"skipped 2 of 4 files of {folder} that are not UTF-8 text (binary, or another encoding), e.g. latin1.py"
    assert data.skipped_note() == note

    txt = prepare(_cfg(tmp_path, folder), progress=False)  # the default glob: .txt files, in their own folder
    assert txt.dir.name == "src-char" and txt.meta["source"]["files"] == 1 and txt.skipped_note() is None
    assert prepare(cfg, progress=False).reused  # neither glob's files replaced the other's
    top = prepare(_cfg(tmp_path, folder, glob="*.txt"), progress=False)  # the same files, another glob
    assert top.meta["source"]["sha256"] != txt.meta["source"]["sha256"]

    with pytest.raises(DataError, match=r"no files matching data.glob='\*\*/\*.md'; change data.glob"):
        prepare(_cfg(tmp_path, folder, glob="**/*.md"), progress=False)
    with pytest.raises(DataError, match=r"no UTF-8 text in the 1 file matching data.glob='\*\*/blob.py' \(e.g. pkg/b"):
        prepare(_cfg(tmp_path, folder, glob="**/blob.py"), progress=False)
    with pytest.raises(DataError, match=r"data.glob='/etc/\*' is not a pattern relative to data.path"):
        prepare(_cfg(tmp_path, folder, glob="/etc/*"), progress=False)


def test_prepare_py_says_what_it_skipped(tmp_path, capsys):
    from minigpt.prepare_cli import main  # data/prepare.py's main

    folder = tmp_path / "docs"
    _write(folder / "a.md", "# Title\n\nSome text.\n" * 30)
    (folder / "logo.md").write_bytes(b"\x89PNG\0\0" * 20)
    assert main([f"--data.path={folder}", "--data.glob=*.md", f"--data.cache_dir={tmp_path}"]) == 0
    note = f"skipped 1 of 2 files of {folder} that are not UTF-8 text (binary, or another encoding), e.g. logo.md"
    assert f"\n  {note}\n" in capsys.readouterr().out
