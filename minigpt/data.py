"""Data: turn a text corpus into token files once, then sample training batches from them.

`prepare(cfg)` reads the corpus (a local file or folder of .txt files, or a Hugging Face hub dataset)
through the `datasets` library, splits it by position into train and val (the last `val_fraction`
of the characters is val, so validation text is never seen in training), tokenizes both splits and
writes, into a cache folder such as `data/cache/shakespeare-input-char/`:

    train.bin, val.bin   token ids, flat, uint16 when the vocabulary fits, else uint32
    meta.json            tokenizer, vocab size, dtype, token counts, source sha256, format version

Preparing again with the same source, tokenizer and split reuses those files; a change rebuilds them.
Files are written under temporary names and renamed into place, so an interrupted run never leaves
files that look complete.

`BatchSampler` draws random (x, y) windows from a split's memmap; `eval_batches` gives a fixed set.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
import torch

from minigpt.config import DataConfig
from minigpt.tokenizer import TOKENIZER_KINDS, Tokenizer, TokenizerError, build_tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1
SPLITS = ("train", "val")
EVAL_SEED = 1337
"""Seed of `eval_batches`, fixed so two evaluations of one model see the same windows."""

_CHUNK_CHARS = 1 << 16  # documents are cut into pieces of about this many characters for the batched map
_PARALLEL_MIN_BYTES = 64 << 20  # corpora larger than this are tokenized with several processes
_PROGRESS_MIN_BYTES = 8 << 20  # smaller local corpora take about a second: no progress bars
_READ_BYTES = 1 << 20


class DataError(ValueError):
    """Bad data input; the message is one line naming the problem and the fix."""


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id of a vocabulary of `vocab_size`."""
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    if vocab_size <= 1 << 32:
        return np.dtype(np.uint32)
    raise DataError(f"vocabulary of {vocab_size} tokens is too large for uint32 token files; use a smaller tokenizer")


# ----------------------------------------------------------------------------------------------
# Source: what is read, and a fingerprint of it


@dataclass
class _Source:
    kind: Literal["file", "folder", "hf"]
    name: str  # readable part of the cache folder name
    sha256: str
    info: dict[str, Any]  # written to meta.json
    files: list[Path] = field(default_factory=list)
    chars: list[int] = field(default_factory=list)  # characters per file, as datasets should read them
    nbytes: int = 0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "corpus"


def _scan_file(path: Path, shown: Path) -> tuple[str, int, int]:
    """sha256, characters (with \\r\\n read as one newline, as Python's text mode does) and bytes of a file."""
    digest = hashlib.sha256()
    decoder = codecs.getincrementaldecoder("utf-8")()
    chars = crlf = pos = 0
    last = b""
    with open(path, "rb") as f:
        while chunk := f.read(_READ_BYTES):
            digest.update(chunk)
            pending = len(decoder.getstate()[0])
            try:
                chars += len(decoder.decode(chunk))
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{shown} is not UTF-8 text (invalid byte at offset {pos - pending + e.start}); "
                    "convert it to UTF-8 (e.g. iconv -t utf-8) or pass another file"
                ) from None
            crlf += chunk.count(b"\r\n") + (last == b"\r" and chunk[:1] == b"\n")
            last = chunk[-1:]
            pos += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        pending = len(decoder.getstate()[0])
        raise DataError(
            f"{shown} is not UTF-8 text (truncated character at byte offset {pos - pending}); "
            "convert it to UTF-8 or pass another file"
        ) from None
    return digest.hexdigest(), chars - crlf, pos


def _local_source(cfg: DataConfig) -> _Source:
    path = Path(cfg.path)
    if not path.exists():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(
            f"corpus {cfg.path} does not exist{where}; pass an existing text file or folder with --data.path=..."
        )
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"folder {cfg.path} has no .txt files; put the text in .txt files or pass a file with --data.path=...")
    else:
        files = [path]
    digest = hashlib.sha256()
    chars, nbytes = [], 0
    for f in files:
        shown = f if f == path else path / f.relative_to(path)
        file_sha, n_chars, n_bytes = _scan_file(f, shown)
        chars.append(n_chars)
        nbytes += n_bytes
        # one file: its own sha256 (comparable with `sha256sum`); a folder: names and contents.
        digest.update(f"{f.relative_to(path).as_posix() if f != path else ''}\0{file_sha}\n".encode())
    if sum(chars) == 0:
        raise DataError(f"corpus {cfg.path} is empty; pass a file (or folder) that holds text")
    sha = file_sha if len(files) == 1 and files[0] == path else digest.hexdigest()
    resolved = path.resolve()
    name = resolved.name if path.is_dir() else f"{resolved.parent.name}-{resolved.stem}"
    info = {"kind": "folder" if path.is_dir() else "file", "path": str(cfg.path), "files": len(files), "bytes": nbytes}
    return _Source(
        kind="folder" if path.is_dir() else "file",
        name=_slug(name),
        sha256=sha,
        info=info,
        files=files,
        chars=chars,
        nbytes=nbytes,
    )


def _hf_source(cfg: DataConfig) -> _Source:
    # The hub dataset is identified by name, config, split and column: preparing it once lets later
    # runs (even offline) reuse the token files. Delete the cache folder to fetch it again.
    identity = {"hf_dataset": cfg.hf_dataset, "hf_config": cfg.hf_config, "hf_split": cfg.hf_split,
                "hf_text_column": cfg.hf_text_column}
    sha = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    parts = [str(cfg.hf_dataset).replace("/", "--")] + ([cfg.hf_config] if cfg.hf_config else []) + [cfg.hf_split]
    return _Source(kind="hf", name=_slug("-".join(parts)), sha256=sha, info={"kind": "hf", **identity})


def _check_online(dataset: str) -> None:
    """Fail in seconds, not minutes, when the hub cannot be reached."""
    flags = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE") if os.environ.get(v, "").upper() in {"1", "ON", "YES", "TRUE"}]
    if flags:
        raise DataError(
            f"hub dataset {dataset!r} needs the network but {flags[0]} is set; unset it, or use a local file with --data.path=..."
        )
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        raise DataError(
            f"hub dataset {dataset!r} needs the network but {host} cannot be reached ({e.strerror or e}); "
            "use a local text file with --data.path=... (or prepare it once while online)"
        ) from None


# ----------------------------------------------------------------------------------------------
# Reading with `datasets`


@contextlib.contextmanager
def _datasets_quiet(progress: bool, offline: bool) -> Iterator[Any]:
    """Import `datasets` with its progress bars and hub access set for this call, restored afterwards."""
    import datasets

    bars_were_on = not datasets.are_progress_bars_disabled()
    was_offline = datasets.config.HF_HUB_OFFLINE
    if not progress:
        datasets.disable_progress_bars()
    if offline:
        # local files need no network; this also stops load_dataset's download-count ping.
        datasets.config.HF_HUB_OFFLINE = True
    try:
        yield datasets
    finally:
        datasets.config.HF_HUB_OFFLINE = was_offline
        if bars_were_on:
            datasets.enable_progress_bars()


def _read_local(datasets: Any, source: _Source, work: Path, in_memory: bool) -> Any:
    # sample_by="document": one row per file with its whole text; keep_linebreaks keeps every "\n".
    # The text builder opens files in text mode, so "\r\n" arrives as "\n" (counted that way in _scan_file).
    return datasets.load_dataset(
        "text",
        data_files=[str(f.resolve()) for f in source.files],
        sample_by="document",
        keep_linebreaks=True,
        split="train",
        cache_dir=str(work / "hf"),
        keep_in_memory=in_memory,
    )


def _read_hub(datasets: Any, cfg: DataConfig) -> Any:
    try:
        ds = datasets.load_dataset(
            cfg.hf_dataset, cfg.hf_config, split=cfg.hf_split, cache_dir=str(Path(cfg.cache_dir) / "hf")
        )
    except Exception as e:  # datasets raises many types; the user needs the first line of any of them
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"could not load hub dataset {cfg.hf_dataset!r} (config {cfg.hf_config}, split {cfg.hf_split!r}): {first}; "
            "check --data.hf_dataset, --data.hf_config and --data.hf_split"
        ) from None
    if cfg.hf_text_column not in ds.column_names:
        raise DataError(
            f"hub dataset {cfg.hf_dataset!r} has no column {cfg.hf_text_column!r} (columns: {', '.join(ds.column_names)}); "
            "set --data.hf_text_column=..."
        )
    ds = ds.select_columns([cfg.hf_text_column])
    if cfg.hf_text_column != "text":
        ds = ds.rename_column(cfg.hf_text_column, "text")
    return ds.filter(_is_text, batched=True)


def _is_text(batch: dict[str, list]) -> list[bool]:
    return [isinstance(t, str) for t in batch["text"]]


# ----------------------------------------------------------------------------------------------
# Splitting and tokenizing (functions given to Dataset.map are module-level so worker processes can use them)

# A cut right after "\n" with a printable non-space ASCII character on both sides starts a new
# pre-tokenization piece in GPT-2's pattern, so tokenizing the pieces gives exactly the ids of the whole.
_SAFE_CUT = re.compile(r"[!-~]\n(?=[!-~])")


def _cut_pieces(text: str, size: int) -> list[str]:
    pieces, start = [], 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        pieces.append(text[start : m.start() + 2])
        start = m.start() + 2
    pieces.append(text[start:])
    return pieces


class _Chunk:
    """Batched map: cut long documents into pieces; only a document's last piece keeps its separator flag."""

    def __init__(self, newline_between_docs: bool):
        self.newline = newline_between_docs

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts, seps = [], []
        for text, sep in zip(batch["text"], batch["sep"]):
            if sep and self.newline and not text.endswith("\n"):
                text += "\n"  # char tokenizer has no end-of-text token: documents are kept apart by a newline
            pieces = _cut_pieces(text, _CHUNK_CHARS)
            texts += pieces
            seps += [False] * (len(pieces) - 1) + [sep]
        return {"text": texts, "sep": seps}


class _Encode:
    """Batched map: text pieces -> token ids, with end-of-text after each document that has a separator."""

    def __init__(self, tokenizer_dict: dict[str, Any]):
        self.tokenizer_dict = tokenizer_dict
        self._tok: Tokenizer | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tokenizer_dict": self.tokenizer_dict, "_tok": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        if self._tok is None:
            self._tok = tokenizer_from_dict(self.tokenizer_dict)
        tok, eot = self._tok, self._tok.eot_id
        ids = []
        for text, sep in zip(batch["text"], batch["sep"]):
            row = tok.encode(text)
            if sep and eot is not None:
                row.append(eot)
            ids.append(row)
        return {"ids": ids}


def _char_counts(batch: dict[str, list]) -> dict[str, list]:
    return {"n": [len(t) for t in batch["text"]]}


def _split_docs(datasets: Any, docs: Any, lengths: np.ndarray, val_fraction: float) -> tuple[Any, Any, int, int]:
    """Cut the concatenated documents at character int(n * (1 - val_fraction)); return (train, val) datasets."""
    total = int(lengths.sum())
    cut = int(total * (1.0 - val_fraction))
    if cut == 0 or cut == total:
        raise DataError(
            f"corpus of {total} characters leaves an empty {'train' if cut == 0 else 'val'} split with "
            f"val_fraction={val_fraction}; use a longer corpus or change --data.val_fraction"
        )
    ends = np.cumsum(lengths)
    k = int(np.searchsorted(ends, cut, side="right"))  # document holding the first val character
    offset = cut - (int(ends[k - 1]) if k > 0 else 0)
    n_docs = len(docs)

    features = datasets.Features({"text": datasets.Value("string"), "sep": datasets.Value("bool")})

    def flagged(start: int, stop: int, last_sep: bool) -> Any:
        # Rows start..stop-1 with "sep" = a document follows, so the document separator goes after the row.
        if start >= stop:
            return None
        flags = [True] * (stop - start - 1) + [last_sep]
        return docs.select(range(start, stop)).add_column("sep", flags).cast(features)

    def piece(text: str, sep: bool) -> Any:
        return datasets.Dataset.from_dict({"text": [text], "sep": [sep]}, features=features)

    train_parts = [flagged(0, k, True)]
    val_parts = []
    if offset > 0:
        text = docs[k]["text"]
        train_parts.append(piece(text[:offset], False))
        val_parts.append(piece(text[offset:], k < n_docs - 1))
        rest_start = k + 1
    else:
        rest_start = k
    val_parts.append(flagged(rest_start, n_docs, False))
    train = datasets.concatenate_datasets([p for p in train_parts if p is not None])
    val = datasets.concatenate_datasets([p for p in val_parts if p is not None])
    return train, val, cut, total - cut


# ----------------------------------------------------------------------------------------------
# Prepared data on disk


@dataclass
class PreparedData:
    """A prepared cache folder: token files, their meta.json and the tokenizer that made them."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    reused: bool = False
    """True when prepare() found valid files and wrote nothing."""

    @property
    def train_path(self) -> Path:
        return self.dir / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.dir / "val.bin"

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    def load_split(self, name: str) -> np.memmap:
        """Read-only memmap of a split's token ids, shape (N,)."""
        if name not in SPLITS:
            raise ValueError(f"split {name!r} does not exist; choose one of {', '.join(SPLITS)}")
        return np.memmap(self.dir / f"{name}.bin", dtype=np.dtype(self.meta["dtype"]), mode="r",
                         shape=(int(self.meta[f"{name}_tokens"]),))

    def probe_tokens(self, n_tokens: int) -> np.ndarray:
        """The first `n_tokens` ids of val (fewer if val is shorter): a fixed text window, e.g. for attention maps."""
        return np.array(self.load_split("val")[:n_tokens], dtype=np.int64)


_META_KEYS = ("format_version", "source", "tokenizer", "vocab_size", "dtype", "val_fraction", "train_tokens", "val_tokens")


def _read_meta(path: Path) -> dict[str, Any]:
    """meta.json as a dict; corrupted files raise DataError."""
    fix = f"delete the folder {path.parent} and run again to rebuild it"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path} is corrupted ({type(e).__name__}); {fix}") from None
    if not isinstance(meta, dict) or any(k not in meta for k in _META_KEYS):
        missing = [k for k in _META_KEYS if not isinstance(meta, dict) or k not in meta]
        raise DataError(f"{path} is corrupted (missing {', '.join(missing)}); {fix}")
    return meta


def load_prepared(directory: str | Path, *, reused: bool = True) -> PreparedData:
    """Open a prepared cache folder, checking that meta.json agrees with itself and with the token files."""
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{directory} has no meta.json, so it is not prepared data; run python data/prepare.py first")
    meta = _read_meta(meta_path)
    fix = f"delete the folder {directory} and run again to rebuild it"
    if meta["format_version"] != FORMAT_VERSION:
        raise DataError(f"{meta_path} has format version {meta['format_version']}, this minigpt reads {FORMAT_VERSION}; {fix}")
    if meta["dtype"] not in ("uint16", "uint32"):
        raise DataError(f"{meta_path} names dtype {meta['dtype']!r}, expected uint16 or uint32; {fix}")
    try:
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
    except TokenizerError as e:
        raise DataError(f"{meta_path} has a bad tokenizer ({e}); {fix}") from None
    if tokenizer.vocab_size != meta["vocab_size"]:
        raise DataError(
            f"{meta_path} says vocab_size {meta['vocab_size']} but its tokenizer has {tokenizer.vocab_size}; {fix}"
        )
    dtype = np.dtype(meta["dtype"])
    if tokenizer.vocab_size > np.iinfo(dtype).max + 1:
        raise DataError(
            f"{meta_path}: vocabulary of {tokenizer.vocab_size} is too large for dtype {dtype.name} "
            f"(at most {np.iinfo(dtype).max + 1}); {fix}"
        )
    for split in SPLITS:
        n = meta[f"{split}_tokens"]
        file = directory / f"{split}.bin"
        size = file.stat().st_size if file.exists() else None
        if not isinstance(n, int) or n <= 0 or size != n * dtype.itemsize:
            raise DataError(
                f"{file} does not match {meta_path} ({'missing' if size is None else f'{size} bytes'}, "
                f"meta says {n} {dtype.name} tokens); {fix}"
            )
    return PreparedData(dir=directory, meta=meta, tokenizer=tokenizer, reused=reused)


def cache_folder(cfg: DataConfig) -> Path:
    """The folder prepare(cfg) uses, e.g. data/cache/shakespeare-input-char."""
    source = _hf_source(cfg) if cfg.hf_dataset else _local_source(cfg)
    return Path(cfg.cache_dir) / f"{source.name}-{cfg.tokenizer}"


def _matches(meta: dict[str, Any], source: _Source, cfg: DataConfig) -> bool:
    """Was this meta.json written for the same source, tokenizer and split?"""
    return (
        meta.get("format_version") == FORMAT_VERSION
        and isinstance(meta.get("source"), dict)
        and meta["source"].get("sha256") == source.sha256
        and isinstance(meta.get("tokenizer"), dict)
        and meta["tokenizer"].get("kind") == cfg.tokenizer
        and meta.get("val_fraction") == cfg.val_fraction
    )


def _write_tokens(ds: Any, path: Path, dtype: np.dtype, progress: bool, desc: str) -> int:
    from tqdm.auto import tqdm

    n = 0
    with open(path, "wb") as f, tqdm(total=len(ds), desc=desc, unit="rows", disable=not progress, leave=False) as bar:
        for batch in ds.iter(batch_size=1024):
            for row in batch["ids"]:
                np.asarray(row, dtype=dtype).tofile(f)
                n += len(row)
            bar.update(len(batch["ids"]))
        f.flush()
        os.fsync(f.fileno())
    return n


def prepare(cfg: DataConfig, *, progress: bool = True) -> PreparedData:
    """Tokenize the corpus of `cfg` into its cache folder, or reuse what an earlier call wrote there."""
    if cfg.hf_dataset:
        source = _hf_source(cfg)
    else:
        source = _local_source(cfg)  # validates path, UTF-8 and emptiness before anything is written
    out = Path(cfg.cache_dir) / f"{source.name}-{cfg.tokenizer}"
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = _read_meta(meta_path)
        if _matches(meta, source, cfg):
            return load_prepared(out, reused=True)
    if source.kind == "hf":
        _check_online(str(cfg.hf_dataset))

    out.mkdir(parents=True, exist_ok=True)
    tag = f"tmp-{os.getpid()}"
    work = out / f".{tag}"
    try:
        meta = _build(cfg, source, out, work, tag, progress)
        # Swap in the new files: meta.json goes first (without it the folder is "not prepared")
        # and comes back last, so an interruption never pairs a meta.json with other token files.
        meta_path.unlink(missing_ok=True)
        for split in SPLITS:
            os.replace(out / f"{split}.bin.{tag}", out / f"{split}.bin")
        tmp_meta = out / f"meta.json.{tag}"
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_meta, meta_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for leftover in out.glob(f"*.{tag}"):
            leftover.unlink(missing_ok=True)
    return load_prepared(out, reused=False)


def _build(cfg: DataConfig, source: _Source, out: Path, work: Path, tag: str, progress: bool) -> dict[str, Any]:
    """Read, split, tokenize; write {split}.bin.{tag} into `out` and return the meta dict."""
    large = source.nbytes > _PARALLEL_MIN_BYTES
    progress = progress and (source.kind == "hf" or source.nbytes > _PROGRESS_MIN_BYTES)
    work.mkdir(parents=True, exist_ok=True)
    with _datasets_quiet(progress, offline=source.kind != "hf") as datasets:
        docs = _read_local(datasets, source, work, in_memory=not large) if source.kind != "hf" else _read_hub(datasets, cfg)
        if source.kind == "hf":
            source.info["rows"] = len(docs)
            large = docs.data.nbytes > _PARALLEL_MIN_BYTES
        num_proc = min(os.cpu_count() or 1, 8) if large else None

        def map_kw(name: str) -> dict[str, Any]:
            # Small corpora stay in memory; large ones go through cache files inside `work` (deleted afterwards).
            if num_proc is None:
                return {"keep_in_memory": True}
            return {"num_proc": num_proc, "cache_file_name": str(work / f"{name}.arrow")}

        n = docs.map(_char_counts, batched=True, remove_columns=docs.column_names, **map_kw("lengths"))["n"]
        lengths = np.asarray(n, dtype=np.int64)
        if source.kind != "hf" and lengths.tolist() != source.chars:
            raise DataError(
                f"datasets read {int(lengths.sum())} characters from {cfg.path} but it holds {sum(source.chars)}; "
                "check that the files are plain UTF-8 text and are not changing while being read"
            )
        if not lengths.any():
            raise DataError(f"hub dataset {cfg.hf_dataset!r} has no text in column {cfg.hf_text_column!r}; check --data.hf_text_column")
        if not lengths.all():  # empty documents add nothing but separators
            keep = np.flatnonzero(lengths)
            docs, lengths = docs.select(keep, keep_in_memory=True), lengths[keep]
        train, val, train_chars, val_chars = _split_docs(datasets, docs, lengths, cfg.val_fraction)
        chunk = _Chunk(newline_between_docs=cfg.tokenizer == "char")
        pieces = {
            name: ds.map(chunk, batched=True, desc=f"Cutting {name}", **map_kw(f"{name}-pieces"))
            for name, ds in (("train", train), ("val", val))
        }

        if cfg.tokenizer == "char":
            # Vocabulary from the training split only (the rule); val must not add characters.
            seen: set[str] = set()
            for batch in pieces["train"].iter(batch_size=1024):
                for text in batch["text"]:
                    seen.update(text)
            tokenizer = build_tokenizer("char", "".join(sorted(seen)))
            val_seen: set[str] = set()
            for batch in pieces["val"].iter(batch_size=1024):
                for text in batch["text"]:
                    val_seen.update(text)
            unseen = sorted(val_seen - seen)
            if unseen:
                shown = " ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
                raise DataError(
                    f"the val split has {len(unseen)} character(s) that never occur in train: {shown}; "
                    "use --data.tokenizer=gpt2, another --data.val_fraction, or remove them from the corpus"
                )
        else:
            tokenizer = build_tokenizer(cfg.tokenizer)
        dtype = token_dtype(tokenizer.vocab_size)

        encode = _Encode(tokenizer.to_dict())
        counts = {}
        for name, ds in pieces.items():
            ids = ds.map(encode, batched=True, batch_size=64, remove_columns=ds.column_names,
                         desc=f"Tokenizing {name} ({cfg.tokenizer})", **map_kw(f"{name}-ids"))
            counts[name] = _write_tokens(ids, out / f"{name}.bin.{tag}", dtype, progress, f"Writing {name}.bin")
            if counts[name] == 0:
                raise DataError(f"the {name} split has no tokens; use a longer corpus or change --data.val_fraction")

    return {
        "format_version": FORMAT_VERSION,
        "source": {**source.info, "sha256": source.sha256},
        "tokenizer": tokenizer.to_dict(),
        "vocab_size": tokenizer.vocab_size,
        "dtype": dtype.name,
        "val_fraction": cfg.val_fraction,
        "train_tokens": counts["train"],
        "val_tokens": counts["val"],
        "train_chars": train_chars,
        "val_chars": val_chars,
    }


# ----------------------------------------------------------------------------------------------
# Batches


def _batch_seed(seed: int, index: int) -> int:
    # One independent 64-bit seed per (seed, global micro-batch index).
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


class BatchSampler:
    """Random (x, y) windows from a 1-D array of token ids (usually a split's memmap).

    Each `next()` seeds a `torch.Generator` from (seed, global micro-batch index) and draws
    `batch_size` start positions. Micro-batches are numbered as one process would draw them:
    with world_size W and micro_steps m micro-batches per rank and optimizer step, rank r's
    n-th draw is global micro-batch (n // m) * m * W + r * m + n % m. So every rank draws its
    own windows, and W processes together see exactly the batches one process with m * W
    accumulation steps would see: DDP and single-process runs train on the same data. It reads only those windows of
    block_size + 1 tokens (the corpus is never copied) and returns x = window[:-1], y = window[1:]
    as int64 tensors of shape (B, T). `state_dict()` is the step count, the same on every rank:
    loading any rank's state makes the next batches those an uninterrupted run would have drawn.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        block_size: int,
        *,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        micro_steps: int = 1,
        device: str | torch.device = "cpu",
        split: str = "train",
    ):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} for world_size {world_size}")
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be a 1-D array of ids, got shape {tokens.shape}")
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size} and {block_size}")
        n = len(tokens)
        if n < block_size + 1:
            fit = f"use --model.block_size={n - 1} or less, or a longer corpus" if n >= 2 else "use a longer corpus"
            raise DataError(f"the {split} split has {n} tokens, fewer than block_size + 1 = {block_size + 1}; {fit}")
        self.tokens = tokens
        self.batch_size = batch_size
        self.block_size = block_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.micro_steps = micro_steps
        self.device = torch.device(device)
        self.step = 0
        self._generator = torch.Generator()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch (x, y), each int64 of shape (B, T), on `device`."""
        B, T = self.batch_size, self.block_size
        m, n = self.micro_steps, self.step
        index = (n // m) * m * self.world_size + self.rank * m + n % m
        self._generator.manual_seed(_batch_seed(self.seed, index))
        self.step += 1
        starts = torch.randint(len(self.tokens) - T, (B,), generator=self._generator).tolist()
        windows = np.stack([self.tokens[i : i + T + 1] for i in starts]).astype(np.int64)  # (B, T+1)
        batch = torch.from_numpy(windows)
        x, y = batch[:, :-1], batch[:, 1:]  # (B, T) each; y[b, t] is the token after x[b, t]
        if self.device.type == "cuda":
            # pinned host memory lets the copy run asynchronously with the GPU's work
            x = x.contiguous().pin_memory().to(self.device, non_blocking=True)
            y = y.contiguous().pin_memory().to(self.device, non_blocking=True)
        else:
            x, y = x.contiguous().to(self.device), y.contiguous().to(self.device)
        return x, y

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield self.next()

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(
                f"sampler state was saved with seed {state.get('seed')}, this sampler has seed {self.seed}; "
                "resume with the seed of the original run"
            )
        self.step = int(state["step"])


def eval_batches(
    tokens: np.ndarray,
    n_batches: int,
    batch_size: int,
    block_size: int,
    *,
    seed: int = EVAL_SEED,
    device: str | torch.device = "cpu",
    split: str = "val",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of `n_batches` (x, y) batches, the same on every call, independent of any training sampler."""
    sampler = BatchSampler(tokens, batch_size, block_size, seed=seed, rank=0, device=device, split=split)
    return [sampler.next() for _ in range(n_batches)]
