"""Data: `prepare(cfg)` tokenizes a text file, a folder of text files or a hub dataset once into a cache folder
(train.bin, val.bin, meta.json; val is the last `val_fraction` of the characters) that later calls reuse.
With data.tokenizer=bpe it first trains the tokenizer on the train split, kept there as tokenizer.json.
It streams: text is read and tokenized in bounded blocks, so its memory does not grow with the corpus.
`BatchSampler` draws random (x, y) windows from a split, `eval_batches` a fixed set. docs/data.md has the details.
"""

from __future__ import annotations

import codecs
import collections
import errno
import fnmatch
import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from tqdm.auto import tqdm

from minigpt.config import DataConfig
from minigpt.errors import UserError
from minigpt.runtime import lock_folder
from minigpt.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    TokenizerError,
    tokenizer_from_dict,
)

FORMAT_VERSION = 1
SPLITS = ("train", "val")
EVAL_SEED = 1337  # seed of `eval_batches`, fixed so two evaluations of one model see the same windows

_BLOCK_BYTES = 8 << 20  # local files are read and decoded this many bytes at a time
_CHUNK_CHARS = 1 << 16  # documents are encoded in pieces of about this many characters
_BATCH_PIECES = 16  # pieces sent to a worker process at a time
_QUEUED_PER_WORKER = 4  # batches waiting per worker: enough to keep it busy, few enough to bound memory
_PARALLEL_MIN_CHARS = 64 << 20  # corpora larger than this are tokenized with several processes
_GPT2_BYTES_PER_TOKEN = 2.5  # for the disk-space check; English text averages 3 to 4.5 bytes per GPT-2 token
_SNIFF_BYTES = 8192  # a NUL byte among a folder file's first bytes marks it binary (as git and grep decide)
_CHECK_TOKENS = 1 << 24  # token ids are checked against the vocabulary this many at a time (32 MB of uint16)
BPE_FILE = "tokenizer.json"  # a bpe cache folder's trained tokenizer, in the format transformers loads
# How bpe is trained, part of what its cache is keyed by: a change here retrains instead of reusing a cache.
BPE_SETTINGS = {"recipe": "byte-level", "pre_tokenizer": "gpt2-regex", "special": ["<|endoftext|>"], "split": "train"}


class DataError(UserError):
    """Bad data input; the message is one line naming the problem and the fix."""


class _NotText(DataError):
    """A file is not UTF-8 text: an error for a single-file corpus, a skipped file in a folder."""


def _cannot_read(path: str | Path, e: OSError, fix: str) -> DataError:
    return DataError(f"cannot read {path}: {e.strerror or e}; {fix}")


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id (a char vocabulary has at most 0x110000 ids)."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


# ---- Source: where the documents come from, and a fingerprint that says when they change ----
def cache_folder(cfg: DataConfig) -> Path:
    """The folder prepare(cfg) uses, e.g. data/cache/shakespeare-input-char."""
    if cfg.hf_dataset:
        name = "-".join([cfg.hf_dataset.replace("/", "--"), *([cfg.hf_config] if cfg.hf_config else []), cfg.hf_split])
    else:
        path = Path(cfg.path).resolve()
        name = path.name if path.is_dir() else f"{path.parent.name}-{path.stem}"
        if path.is_dir() and cfg.glob != DataConfig.glob:  # another glob, other files: another folder
            name += "-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", cfg.glob).strip("._") or "all")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "corpus"
    kind = f"bpe{cfg.vocab_size}" if cfg.tokenizer == "bpe" else cfg.tokenizer  # each vocabulary its own folder
    return Path(cfg.cache_dir) / f"{name}-{kind}"


def _file_sha256(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise _cannot_read(path, e, "make it readable (chmod +r) or move it out of data.path") from None


def _reachable(folder: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    """Whether a glob pattern, split at "/", can match a file inside the subfolder whose path parts are `folder`."""
    for i, name in enumerate(folder):
        if i >= len(pattern) - 1:  # the pattern's last part matches files, not folders
            return False
        if pattern[i] == "**":
            return True
        if not fnmatch.fnmatchcase(name, pattern[i]):
            return False
    return True


def _folder_files(folder: Path, glob: str) -> list[Path]:
    """The files under `folder` that match `glob`, sorted. pathlib's glob skips a subfolder it cannot read
    without a word, so a walk through the subfolders the pattern can reach looks for those first: their text
    would be left out of the corpus."""
    blocked: list[OSError] = []
    for top, subfolders, _ in os.walk(folder, onerror=blocked.append):
        parts = Path(top).relative_to(folder).parts
        subfolders[:] = [d for d in subfolders if _reachable((*parts, d), tuple(glob.split("/")))]
    if blocked:
        fix = "make it readable (chmod -R +rX), or narrow data.glob or data.path to leave it out"
        raise _cannot_read(f"folder {blocked[0].filename}", blocked[0], fix)
    try:
        return sorted(p for p in folder.glob(glob) if p.is_file())
    except (ValueError, NotImplementedError) as e:  # an empty or absolute pattern, "**" inside a name
        raise DataError(f"data.glob={glob!r} is not a pattern relative to data.path ({e}); "
                        "write one like '**/*.txt' or 'src/**/*.py'") from None
    except OSError as e:  # a folder that can be listed but not entered
        raise _cannot_read(e.filename, e, "make it readable (chmod -R +rX) or narrow data.glob") from None


def _source(cfg: DataConfig) -> tuple[list[Path], dict[str, Any]]:
    """The corpus's local files in order (none for a hub dataset), and meta.json's "source": what they are and a
    sha256 that changes with them. A hub dataset is known by its name, config, split and column, so later runs
    reuse its token files even offline (delete the cache folder to fetch it again)."""
    if cfg.hf_dataset:
        identity = {
            "hf_dataset": cfg.hf_dataset,
            "hf_config": cfg.hf_config,
            "hf_split": cfg.hf_split,
            "hf_text_column": cfg.hf_text_column,
        }
        sha = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
        return [], {"kind": "hf", **identity, "sha256": sha}
    path = Path(cfg.path)
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        if path.is_symlink():
            raise DataError(f"corpus {cfg.path} is a symbolic link to {os.readlink(path)}, which does not exist; "
                            "set data.path to an existing text file or folder") from None
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise DataError(f"corpus {cfg.path} does not exist{where}; set data.path to an existing text file or folder")
    except OSError as e:  # a symbolic link to itself (ELOOP), a folder on the way that cannot be entered (EACCES)
        raise _cannot_read(f"corpus {cfg.path}", e, "set data.path to a readable text file or folder") from None
    files = _folder_files(path, cfg.glob) if is_dir else [path]
    if not files:
        raise DataError(f"folder {cfg.path} has no files matching data.glob={cfg.glob!r}; "
                        "change data.glob (e.g. '**/*.py') or set data.path to a file")
    nbytes = sum(f.stat().st_size for f in files)
    if nbytes == 0:
        raise DataError(f"corpus {cfg.path} is empty; pass a file (or folder) that holds text")
    if is_dir:  # the glob, and the names and contents of the files
        listing = cfg.glob + "\n" + "".join(f"{f.relative_to(path).as_posix()}\0{_file_sha256(f)}\n" for f in files)
        kind, sha = "folder", hashlib.sha256(listing.encode()).hexdigest()
        extra = {"glob": cfg.glob}
    else:  # the file's own sha256, comparable with `sha256sum`
        kind, sha, extra = "file", _file_sha256(path), {}
    return files, {"kind": kind, "path": str(cfg.path), **extra, "files": len(files), "bytes": nbytes, "sha256": sha}


def _file_blocks(path: Path, block_bytes: int = _BLOCK_BYTES) -> Iterator[str]:
    """A file's text in blocks of about block_bytes, with "\\r\\n" and "\\r" read as "\\n" (as Python's text mode
    does). The incremental decoder keeps a character cut by a block edge for the next block, and a "\\r" at the
    end of a block waits for the next one, which may start with its "\\n"."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, held = 0, ""  # bytes read so far; a "\r" held back from the previous block
    try:
        f = open(path, "rb")
    except OSError as e:
        raise _cannot_read(path, e, "make it readable (chmod +r) or move it out of data.path") from None
    with f:
        while True:
            try:
                raw = f.read(block_bytes)
            except OSError as e:  # EIO from a failing disk, or a folder named like a file
                raise _cannot_read(path, e, "check the disk, or move the file out of data.path") from None
            waiting = len(decoder.getstate()[0])  # bytes of a cut character, from the previous block
            try:
                text = held + decoder.decode(raw, final=not raw)
            except UnicodeDecodeError as e:  # e.start counts from the first waiting byte
                raise _NotText(f"{path} is not UTF-8 text ({e.reason} at byte offset {offset - waiting + e.start}); "
                               "convert it to UTF-8 (e.g. iconv -t utf-8) or pass another file") from None
            offset += len(raw)
            held = "\r" if raw and text.endswith("\r") else ""
            text = text[: len(text) - len(held)]
            if text:
                yield text.replace("\r\n", "\n").replace("\r", "\n")
            if not raw:
                return


def _hub_documents(cfg: DataConfig, progress: bool) -> Callable[[], Iterator[list[str]]]:
    """Download (or reuse datasets' cache of) the hub dataset; return a function that yields its non-empty texts,
    each as a one-block document. Rows are read in batches from datasets' memory-mapped Arrow files, never
    all at once. Without a network it fails in seconds, not minutes."""
    name, url = cfg.hf_dataset, urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(flag, "").upper() in {"1", "ON", "YES", "TRUE"}:
            raise DataError(
                f"hub dataset {name!r} needs the network but {flag} is set; "
                "unset it, or set data.path to a local text file"
            )
    try:
        socket.create_connection((host, url.port or (80 if url.scheme == "http" else 443)), timeout=5).close()
    except OSError as e:
        raise DataError(f"hub dataset {name!r} needs the network but {host} cannot be reached ({e.strerror or e}); "
                        "set data.path to a local text file (or prepare the dataset once while online)") from None
    import datasets  # slow to import, and only hub datasets need it

    bars_were_on = not datasets.are_progress_bars_disabled()
    if not progress:
        datasets.disable_progress_bars()
    try:
        ds = datasets.load_dataset(name, cfg.hf_config, split=cfg.hf_split, cache_dir=f"{cfg.cache_dir}/hf")
    except Exception as e:  # datasets raises many types; the user needs the first line of any of them
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise DataError(f"could not load hub dataset {name!r} (config {cfg.hf_config}, split {cfg.hf_split!r}): "
                        f"{first}; check data.hf_dataset, data.hf_config and data.hf_split") from None
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    column = cfg.hf_text_column
    if column not in ds.column_names:
        raise DataError(f"hub dataset {name!r} has no column {column!r} (columns: "
                        f"{', '.join(ds.column_names)}); set data.hf_text_column to one of them")
    ds = ds.select_columns([column])
    return lambda: ([t] for batch in ds.iter(batch_size=1024) for t in batch[column] if isinstance(t, str) and t)


# ---- Splitting and tokenizing ----
# Places where a cut starts a new pre-tokenization piece in GPT-2's pattern, so tokenizing the pieces gives
# exactly the ids of the whole: right after "\n" with a printable non-space ASCII character on both sides, or
# between an ASCII letter and " " + letter (" word" is one piece). A text with neither (say, Chinese without
# line breaks between ASCII characters) is held until it has one, or until its document ends.
_SAFE_CUT = re.compile(r"[!-~]\n(?=[!-~])|[A-Za-z](?= [A-Za-z])")


def _safe_cut(text: str, start: int, char: bool) -> int | None:
    """The first place at or after `start` where `text` can be cut without changing its tokens, or None."""
    if char:  # one token per character: anywhere
        return start
    m = _SAFE_CUT.search(text, start)
    return m.end() if m else None


def _chunks(text: str, char: bool, piece_chars: int = _CHUNK_CHARS) -> tuple[list[str], str]:
    """`text` cut at safe places into pieces of about piece_chars, and the rest (short, or with no safe place yet)."""
    pieces, head = [], 0
    while len(text) - head > piece_chars and (end := _safe_cut(text, head + piece_chars, char)) is not None:
        pieces.append(text[head:end])
        head = end
    return pieces, text[head:]


def _pieces(
    docs: Iterable[Iterable[str]], n_docs: int, cut: int, char: bool, piece_chars: int = _CHUNK_CHARS
) -> Iterator[tuple[str, str, bool]]:
    """(split, text, eot) pieces of the documents, each given as blocks of text, in order: character `cut` of the
    whole starts val, and text is cut at safe places into pieces of about piece_chars. eot: the piece ends a
    document that is not the last, so the end-of-text token follows (for char, a newline)."""
    position = 0  # characters before the current block
    for i, blocks in enumerate(docs):
        split, rest = ("train" if position < cut else "val"), ""  # rest: the document's text not yet given out
        for block in blocks:
            start, position = position, position + len(block)
            if split == "train" and cut < position:  # val starts in this block: train's last pieces end at the cut
                pieces, rest = _chunks(rest + block[: cut - start], char, piece_chars)
                yield from (("train", piece, False) for piece in pieces + [rest])
                split, rest, block = "val", "", block[cut - start :]
            pieces, rest = _chunks(rest + block, char, piece_chars)
            yield from ((split, piece, False) for piece in pieces)
        eot = i < n_docs - 1
        if eot and char and not rest.endswith("\n"):
            rest += "\n"
        yield split, rest, eot


def _encode(tokenizer: Tokenizer, dtype: np.dtype, pieces: list[tuple[str, str, bool]]) -> list[bytes]:
    """Each piece's token ids, then the end-of-text id where it ends a document, as bytes of `dtype`."""
    eot = [] if tokenizer.eot_id is None else [tokenizer.eot_id]
    encoded = tokenizer.encode_batch([text for _, text, _ in pieces])
    return [np.asarray(ids + (eot if sep else []), dtype=dtype).tobytes() for ids, (_, _, sep) in zip(encoded, pieces)]


_worker: dict[str, Any] = {}  # a worker process's tokenizer and dtype, sent once when the pool starts


def _start_worker(tokenizer: Tokenizer, dtype: np.dtype, parent: int) -> None:
    _worker.update(tokenizer=tokenizer, dtype=dtype)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole process group; the parent handles it
    # A worker whose parent is killed (kill -9) would wait for work forever, keeping the cache folder's lock
    # that it inherited; this thread ends it within a second of its parent instead.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _encode_in_worker(pieces: list[tuple[str, str, bool]]) -> list[bytes]:
    return _encode(_worker["tokenizer"], _worker["dtype"], pieces)


def _tokenize(pieces: Iterable[tuple[str, str, bool]], tokenizer: Tokenizer, dtype: np.dtype,
              workers: int) -> Iterator[tuple[str, int, bytes]]:
    """(split, characters, token ids as bytes) for each piece, in order. With workers > 1, batches of pieces are
    encoded in worker processes while this one reads on; at most _QUEUED_PER_WORKER batches per worker wait."""
    pieces = iter(pieces)
    batches = iter(lambda: list(itertools.islice(pieces, _BATCH_PIECES)), [])
    if workers <= 1:
        for batch in batches:
            yield from _labelled(batch, _encode(tokenizer, dtype, batch))
        return
    # A worker that dies (killed, out of memory) makes result() raise BrokenProcessPool instead of waiting forever.
    # The workers are forked. Training a bpe may have run the `tokenizers` thread pool in this process, and a
    # forked process inherits that pool broken: TOKENIZERS_PARALLELISM=false in the workers' environment keeps
    # them off it (one thread each, as processes beside each other should be).
    threads_setting = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    pool = ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(tokenizer, dtype, os.getpid()))
    try:
        queued: collections.deque = collections.deque()  # (batch, its future ids), oldest first
        for batch in batches:
            queued.append((batch, pool.submit(_encode_in_worker, batch)))
            if len(queued) > _QUEUED_PER_WORKER * workers:
                batch, future = queued.popleft()
                yield from _labelled(batch, future.result())
        for batch, future in queued:
            yield from _labelled(batch, future.result())
    finally:  # on an error or Ctrl-C, drop the queued batches instead of encoding them
        pool.shutdown(cancel_futures=True)
        if threads_setting is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = threads_setting


def _labelled(batch: list[tuple[str, str, bool]], encoded: list[bytes]) -> Iterator[tuple[str, int, bytes]]:
    return ((split, len(text), ids) for (split, text, _), ids in zip(batch, encoded))


def _char_tokenizer(pieces: Iterable[tuple[str, str, bool]], bar: tqdm) -> Tokenizer:
    """Char vocabulary from all of the text, train and val (as nanoGPT does): a character that occurs only in
    val gets an id whose embedding training never updates, which is better than refusing the corpus.
    Reads the pieces once (they include the newlines that separate documents)."""
    seen: set[str] = set()
    for _, text, _ in pieces:
        seen.update(text)
        bar.update(len(text))
    return CharTokenizer("".join(sorted(seen)))


# ---- Prepared data on disk ----
@dataclass
class PreparedData:
    """A prepared cache folder: token files, their meta.json and the tokenizer that made them."""

    dir: Path
    meta: dict[str, Any]
    tokenizer: Tokenizer
    reused: bool = False  # True when prepare() found valid files and wrote nothing

    def load_split(self, name: str, start: int = 0, count: int | None = None) -> np.memmap:
        """Read-only memmap of a split's token ids, shape (N,); or of `count` of them from `start` (a window:
        only those pages are mapped, and unmapped when it is freed)."""
        if name not in SPLITS:
            raise ValueError(f"split {name!r} does not exist; choose one of {', '.join(SPLITS)}")
        n, dtype, file = int(self.meta[f"{name}_tokens"]), np.dtype(self.meta["dtype"]), self.dir / f"{name}.bin"
        shape = (n - start if count is None else min(count, n - start),)
        try:
            return np.memmap(file, dtype=dtype, mode="r", offset=start * dtype.itemsize, shape=shape)
        except OSError as e:
            fix = f"make it readable, or delete the folder {self.dir} to prepare it again"
            raise _cannot_read(file, e, fix) from None

    def skipped_note(self) -> str | None:
        """One line for the user when files of a folder corpus were left out as not text, else None."""
        n, example = self.meta["source"].get("skipped", 0), self.meta["source"].get("skipped_example")
        if not n:
            return None
        return (f"skipped {n} of {self.meta['source']['files']} files of {self.meta['source']['path']} that are not "
                f"UTF-8 text (binary, or another encoding), e.g. {example}")

    def probe_tokens(self, n_tokens: int) -> np.ndarray:
        """The first `n_tokens` ids of val (fewer if val is shorter): a fixed text window, e.g. for attention maps."""
        return np.array(self.load_split("val")[:n_tokens], dtype=np.int64)


_META_KEYS = (
    "format_version",
    "source",
    "tokenizer",
    "vocab_size",
    "dtype",
    "val_fraction",
    "train_tokens",
    "val_tokens",
)


def _damaged(path: Path, problem: str) -> DataError:
    return DataError(f"{path} {problem}; delete the folder {path.parent} and run again to rebuild it")


def _read_meta(folder: Path) -> dict[str, Any]:
    """meta.json as a dict with every field prepare() writes; DataError when it is missing or damaged."""
    path = folder / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{folder} has no meta.json, so it is not prepared data; "
                        "run python data/prepare.py first") from None
    except ValueError as e:  # not UTF-8 or not JSON
        raise _damaged(path, f"is corrupted ({type(e).__name__})") from None
    except OSError as e:  # no permission, a failing disk
        raise _cannot_read(path, e, "make it readable, or set data.cache_dir to another folder") from None
    missing = [k for k in _META_KEYS if k not in meta] if isinstance(meta, dict) else list(_META_KEYS)
    if missing or not isinstance(meta["source"], dict) or not isinstance(meta["tokenizer"], dict):
        raise _damaged(path, f"is corrupted (missing or malformed: {', '.join(missing) or 'source, tokenizer'})")
    return meta


def _saved_tokenizer(folder: Path, saved: dict[str, Any]) -> Tokenizer:
    """The tokenizer meta.json describes: inside it (char, gpt2), or in tokenizer.json, whose sha256 it holds (bpe).
    DataError when that file is missing, cut short or changed since it was written."""
    if saved.get("kind") != "bpe" or "file" not in saved:
        return tokenizer_from_dict(saved)
    file = folder / BPE_FILE
    try:
        text = file.read_bytes()
    except FileNotFoundError:
        raise _damaged(file, "is missing") from None
    except OSError as e:
        raise _cannot_read(file, e, f"make it readable, or delete the folder {folder} to prepare it again") from None
    if hashlib.sha256(text).hexdigest() != saved.get("sha256"):
        raise _damaged(file, "is not the tokenizer meta.json was written with (its sha256 differs)")
    return BPETokenizer(text.decode("utf-8"))


def load_prepared(directory: str | Path, *, reused: bool = True) -> PreparedData:
    """Open a prepared cache folder, checking that meta.json agrees with its tokenizer and token files."""
    folder = Path(directory)
    meta, meta_path = _read_meta(folder), folder / "meta.json"
    if meta["format_version"] != FORMAT_VERSION:
        raise _damaged(meta_path, f"has format version {meta['format_version']}, this minigpt reads {FORMAT_VERSION}")
    try:
        tokenizer = _saved_tokenizer(folder, meta["tokenizer"])
    except TokenizerError as e:
        raise _damaged(meta_path, f"has a bad tokenizer ({e})") from None
    dtype = token_dtype(tokenizer.vocab_size)
    if (meta["vocab_size"], meta["dtype"]) != (tokenizer.vocab_size, dtype.name):
        raise _damaged(
            meta_path,
            f"says vocab_size {meta['vocab_size']} and dtype {meta['dtype']!r}, but its "
            f"tokenizer has {tokenizer.vocab_size} tokens, stored as {dtype.name}",
        )
    for split in SPLITS:
        n, file = meta[f"{split}_tokens"], folder / f"{split}.bin"
        size = file.stat().st_size if file.exists() else None
        if not isinstance(n, int) or n <= 0 or size != n * dtype.itemsize:
            found = "missing" if size is None else f"{size} bytes"
            raise _damaged(file, f"does not match {meta_path} ({found}, meta says {n} {dtype.name} tokens)")
    data = PreparedData(dir=folder, meta=meta, tokenizer=tokenizer, reused=reused)
    for split in SPLITS:
        _check_ids(data, split, tokenizer.vocab_size)
    return data


def _check_ids(data: PreparedData, split: str, vocab_size: int, chunk_tokens: int = _CHECK_TOKENS) -> None:
    """DataError naming the first id outside the vocabulary (random bytes of the right size, a file copied from
    another folder): found here, before training, instead of as an IndexError deep into a run. Reads the split
    in windows at memory speed, each freed before the next: pages read through one map of the whole file
    would stay in this process's resident memory (1.3 GB after a 3 GB corpus)."""
    dtype, n = np.dtype(data.meta["dtype"]), int(data.meta[f"{split}_tokens"])
    if vocab_size >= 1 << (8 * dtype.itemsize):  # every value the dtype holds is an id
        return
    for start in range(0, n, chunk_tokens):
        chunk = data.load_split(split, start, chunk_tokens)
        if chunk.max() >= vocab_size:
            at = int(np.argmax(chunk >= vocab_size))
            problem = f"holds token id {chunk[at]} at position {start + at:,}, outside the vocabulary of {vocab_size}"
            raise _damaged(data.dir / f"{split}.bin", problem)
        del chunk  # unmapped: its pages leave this process's resident memory


def _bar(desc: str, total: int | None, progress: bool) -> tqdm:
    """A progress bar in characters (with an ETA when the total is known), shown once it has run for a second."""
    return tqdm(total=total, desc=desc, unit="char", unit_scale=True, leave=False, delay=1, disable=not progress)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e8 else f"{n_bytes / 1e6:.1f} MB"


def _workers(cfg: DataConfig, total_chars: int, parallel_min_chars: int = _PARALLEL_MIN_CHARS) -> int:
    """Tokenizing processes: every core (at most data.workers), or this process alone for a small corpus."""
    if total_chars <= parallel_min_chars:
        return 1
    cores = os.cpu_count() or 1
    return min(cores, cfg.workers) if cfg.workers else cores


def _count(docs: Iterable[Iterable[str]], progress: bool) -> tuple[int, int]:
    """The number of documents and of characters in them, reading one block at a time."""
    n_docs = total = 0
    with _bar("Counting characters", None, progress) as bar:
        for blocks in docs:
            n_docs += 1
            for block in blocks:
                total += len(block)
                bar.update(len(block))
    return n_docs, total


def _looks_binary(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return b"\0" in f.read(_SNIFF_BYTES)
    except OSError as e:
        raise _cannot_read(path, e, "make it readable (chmod +r) or move it out of data.path") from None


def _text_files(
    files: list[Path], folder: bool, progress: bool, block_bytes: int = _BLOCK_BYTES
) -> tuple[list[Path], int, list[Path]]:
    """The files that hold text, their number of characters, and the files of a folder skipped as not text
    (a NUL byte among the first _SNIFF_BYTES, or not UTF-8); a single file that is not UTF-8 is an error.
    Reads every file once, a block at a time."""
    kept, skipped, total = [], [], 0
    with _bar("Counting characters", None, progress) as bar:
        for file in files:
            if folder and _looks_binary(file):
                skipped.append(file)
                continue
            n = 0
            try:
                for block in _file_blocks(file, block_bytes):
                    n += len(block)
                    bar.update(len(block))
            except _NotText:
                if not folder:
                    raise
                skipped.append(file)
                continue
            if n:  # an empty file adds no document
                kept.append(file)
                total += n
    return kept, total, skipped


def _check_disk(folder: Path, need: int) -> None:
    """DataError when the disk that will hold `folder` (which need not exist yet) has less than `need` bytes free."""
    existing = next(p for p in [folder, *folder.parents] if os.path.exists(p))  # os.path: False where unreadable
    free = shutil.disk_usage(existing).free
    if free < need:
        raise DataError(f"not enough disk space in {folder}: the token files need about {_size(need)}, "
                        f"{_size(free)} is free; free some space or set data.cache_dir to a bigger disk")


def _reusable(out: Path, source: dict[str, Any], cfg: DataConfig) -> bool:
    """Whether out holds token files written for the same source, tokenizer and split."""
    # os.path: a cache folder that cannot be read counts as not prepared; writing it then says why it fails
    if not os.path.exists(out / "meta.json"):
        return False
    old = _read_meta(out)
    written_for = old["format_version"], old["source"].get("sha256"), old["tokenizer"].get("kind")
    same = written_for == (FORMAT_VERSION, source["sha256"], cfg.tokenizer) and old["val_fraction"] == cfg.val_fraction
    if same and cfg.tokenizer == "bpe":  # trained the same way, and its tokenizer.json still whole: else train again
        same = old["vocab_size"] == cfg.vocab_size and old["tokenizer"].get("settings") == BPE_SETTINGS
        try:
            _saved_tokenizer(out, old["tokenizer"])  # raises when tokenizer.json is missing, cut short or changed
        except (DataError, TokenizerError):
            return False
    return same


def _lock_cache(out: Path) -> Any:
    """Lock the cache folder, so that one process writes it at a time: the lock, to close when done."""
    try:
        lock, owner = lock_folder(out)
    except OSError as e:
        raise DataError(f"cannot write the data cache {out}: {e.strerror}; "
                        "set data.cache_dir to a writable folder") from None
    if owner is not None:
        raise DataError(f"{out} is being prepared by another process (pid {owner}); wait for it, then run again")
    return lock


def _swap_in(out: Path, tag: str, meta: dict[str, Any]) -> None:
    """Put the new token files (*.<tag>) and their meta.json in place of the old ones."""
    # meta.json goes first (without it the folder is "not prepared") and comes back last, so an
    # interruption never pairs a meta.json with other token files.
    (out / "meta.json").unlink(missing_ok=True)
    for split in SPLITS:
        os.replace(out / f"{split}.bin.{tag}", out / f"{split}.bin")
    if (out / f"{BPE_FILE}.{tag}").exists():  # bpe's trained tokenizer, which meta.json pins by its sha256
        os.replace(out / f"{BPE_FILE}.{tag}", out / BPE_FILE)
    (out / f"meta.json.{tag}").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    os.replace(out / f"meta.json.{tag}", out / "meta.json")


def _write_tokens(
    out: Path,
    tag: str,
    pieces: Callable[[], Iterator[tuple[str, str, bool]]],
    tokenizer: Tokenizer,
    dtype: np.dtype,
    workers: int,
    bar: tqdm,
) -> dict[str, int]:
    """Tokenize the pieces into out/<split>.bin.<tag>, synced to disk: the tokens written per split."""
    counts = dict.fromkeys(SPLITS, 0)
    with open(out / f"train.bin.{tag}", "wb") as train, open(out / f"val.bin.{tag}", "wb") as val:
        for split, n_chars, ids in _tokenize(pieces(), tokenizer, dtype, workers):
            (train if split == "train" else val).write(ids)
            counts[split] += len(ids) // dtype.itemsize
            bar.update(n_chars)
        for f in (train, val):
            f.flush()
            os.fsync(f.fileno())
    return counts


def _train_bpe(cfg: DataConfig, pieces: Iterator[tuple[str, str, bool]], cut: int, progress: bool) -> BPETokenizer:
    """A byte-level BPE of cfg.vocab_size tokens, trained on the train split only (the model is scored on val,
    so its text must not shape the vocabulary). The pieces stream by; the trainer keeps counts of distinct
    pre-tokens, not the text."""

    def train_split(bar: tqdm) -> Iterator[str]:
        for split, text, _ in pieces:
            if split != "train":  # train's pieces come first; the rest is val
                return
            bar.update(len(text))
            yield text

    def train() -> str:
        with _bar(f"Training the bpe tokenizer ({cfg.vocab_size:,} tokens)", cut, progress) as bar:
            return BPETokenizer.train(train_split(bar), cfg.vocab_size).to_json()

    tokenizer = BPETokenizer(_in_child(train))
    if tokenizer.vocab_size < cfg.vocab_size:
        n = tokenizer.vocab_size
        raise DataError(f"the train split of {cfg.hf_dataset or cfg.path} supports at most {n:,} bpe tokens (the "
                        f"trainer ran out of pairs to merge); set data.vocab_size={n} or less, or use a longer corpus")
    return tokenizer


def _in_child(work: Callable[[], str]) -> str:
    """work() run in a forked process, its text sent back. The `tokenizers` trainer's threads leave hundreds of
    MB freed but still held by the allocator; in a child that memory goes back to the system when it ends, so
    the tokenizing workers forked afterwards start small. Where processes are not forked (macOS, Windows),
    work() runs here."""
    if multiprocessing.get_start_method() != "fork":
        return work()
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)

    def run() -> None:
        try:
            sender.send((True, work()))
        except BaseException as e:  # raised again in the parent
            sender.send((False, e))

    child = context.Process(target=run, daemon=True)
    child.start()
    sender.close()
    try:
        message = receiver.recv()
    except EOFError:  # it died without a word: killed, or out of memory
        message = None
    finally:
        child.join()
    if message is None:
        raise DataError(f"the process training the tokenizer ended with exit code {child.exitcode}; "
                        "run again, with more memory free")
    done, result = message
    if not done:
        raise result
    return result


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _documents(
    cfg: DataConfig, files: list[Path], source: dict[str, Any], progress: bool, block_bytes: int
) -> tuple[Callable[[], Iterator[Iterable[str]]], int, int, dict[str, Any]]:
    """The corpus as documents: (a function that streams them afresh, each as text blocks; their number; their
    characters; `source` with what was counted or skipped). A corpus without any text is refused here."""
    if cfg.hf_dataset:
        docs = _hub_documents(cfg, progress)
        n_docs, total = _count(docs(), progress)
        source = {**source, "rows": n_docs}
    else:
        folder = source["kind"] == "folder"
        texts, total, skipped = _text_files(files, folder, progress, block_bytes)  # checks a single file is UTF-8
        docs = lambda: (_file_blocks(f, block_bytes) for f in texts)  # noqa: E731
        n_docs = len(texts)
        if folder:
            source = {**source, "skipped": len(skipped)}
            if skipped:
                source["skipped_example"] = skipped[0].relative_to(cfg.path).as_posix()
    if total == 0 and cfg.hf_dataset:
        raise DataError(
            f"hub dataset {cfg.hf_dataset!r} has no text in column {cfg.hf_text_column!r}; check data.hf_text_column"
        )
    if total == 0:  # _source refuses empty files, so every file of the folder was skipped
        n = f"{len(files)} file{'s' if len(files) > 1 else ''}"
        raise DataError(f"folder {cfg.path} has no UTF-8 text in the {n} matching data.glob={cfg.glob!r} "
                        f"(e.g. {source['skipped_example']} is binary or another encoding); "
                        "change data.glob, or convert the files to UTF-8")
    return docs, n_docs, total, source


def prepare(
    cfg: DataConfig,
    *,
    progress: bool = True,
    block_bytes: int = _BLOCK_BYTES,
    piece_chars: int = _CHUNK_CHARS,
    parallel_min_chars: int = _PARALLEL_MIN_CHARS,
) -> PreparedData:
    """Tokenize the corpus of `cfg` into its cache folder, or reuse what an earlier call wrote there.

    Three passes stream over the text, each holding a few blocks at a time: count the characters (for the
    train/val cut), build the char vocabulary (char) or train the BPE on the train split (bpe), then tokenize
    into temporary files that are renamed into place, meta.json last, so an interrupted run never leaves files
    that look prepared.
    block_bytes (bytes read from a file at a time), piece_chars (characters encoded at a time) and
    parallel_min_chars (the corpus size from which several processes tokenize) bound memory and time only:
    the token files are the same whatever they are."""
    # Long on purpose (~80 lines): the passes run in order, each on the figures of the one before (the characters,
    # the cut, the tokenizer, the expected tokens), and reading them in one place shows that order.
    progress = progress and sys.stderr.isatty()  # a bar redrawn into a log file is noise
    files, source = _source(cfg)
    out = cache_folder(cfg)
    if _reusable(out, source, cfg):
        return load_prepared(out, reused=True)

    docs, n_docs, total, source = _documents(cfg, files, source, progress, block_bytes)
    cut = int(total * (1.0 - cfg.val_fraction))  # the first val character
    if cut == 0 or cut == total:
        raise DataError(f"corpus of {total} characters leaves an empty {'train' if cut == 0 else 'val'} split with "
                        f"val_fraction={cfg.val_fraction}; use a longer corpus or change data.val_fraction")

    char = cfg.tokenizer == "char"

    def pieces() -> Iterator[tuple[str, str, bool]]:
        return _pieces(docs(), n_docs, cut, char, piece_chars)

    # Tokens to expect, for the disk check: char has one per character (and per document end); gpt2's are
    # estimated from the bytes (1 token per byte would bound them, but is far more than text ever needs).
    tokens = total + n_docs if char else int(source.get("bytes", total) / _GPT2_BYTES_PER_TOKEN) + n_docs
    _check_disk(out, tokens * 2)  # 2 bytes per uint16 token; a huge char vocabulary needs uint32, checked below
    if char:
        with _bar("Char vocabulary", total, progress) as bar:
            tokenizer = _char_tokenizer(pieces(), bar)
    elif cfg.tokenizer == "bpe":
        started = time.perf_counter()
        tokenizer = _train_bpe(cfg, pieces(), cut, progress)
        trained_in = time.perf_counter() - started
    else:
        tokenizer = GPT2Tokenizer()
    dtype = token_dtype(tokenizer.vocab_size)
    if dtype.itemsize > 2:
        _check_disk(out, tokens * dtype.itemsize)
    workers = _workers(cfg, total, parallel_min_chars)
    lock = _lock_cache(out)
    tag = f"tmp-{os.getpid()}"
    try:
        for stale in out.glob("*.tmp-*"):  # left by a run that was killed; we hold the lock, so no one writes them
            stale.unlink(missing_ok=True)
        bar = _bar(f"Tokenizing ({cfg.tokenizer}, {workers} process{'es' if workers > 1 else ''}, "
                   f"about {_size(tokens * dtype.itemsize)} of token files)", total, progress)
        with bar:
            counts = _write_tokens(out, tag, pieces, tokenizer, dtype, workers, bar)
        saved = tokenizer.to_dict()
        if isinstance(tokenizer, BPETokenizer):  # its own file, the one transformers loads; meta.json pins it
            text = tokenizer.to_json().encode("utf-8")
            _write_synced(out / f"{BPE_FILE}.{tag}", text)
            sha = hashlib.sha256(text).hexdigest()
            saved = {"kind": "bpe", "file": BPE_FILE, "sha256": sha, "settings": BPE_SETTINGS}
            saved["train_seconds"] = trained_in  # how long training took, for bench prepare
        meta = {
            "format_version": FORMAT_VERSION,
            "source": source,
            "tokenizer": saved,
            "vocab_size": tokenizer.vocab_size,
            "dtype": dtype.name,
            "val_fraction": cfg.val_fraction,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "train_chars": cut,
            "val_chars": total - cut,
        }
        _swap_in(out, tag, meta)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise DataError(f"the disk holding {out} is full; free some space or set data.cache_dir to a bigger "
                            "disk, then run again") from None
        # e.g. a read-only cache folder that needs a rebuild: nothing in it could be changed
        raise DataError(f"cannot write the data cache {out} ({e.strerror or e}); make it writable, "
                        "or set data.cache_dir to a writable folder") from None
    finally:
        for leftover in out.glob(f"*.{tag}"):
            leftover.unlink(missing_ok=True)
        lock.close()
    return load_prepared(out, reused=False)


# ---- Batches ----
class BatchSampler:
    """Random (x, y) windows from a 1-D array of token ids (usually a split's memmap): windows of block_size + 1
    tokens give x = window[:-1] and y = window[1:], int64 of shape (B, T).

    Rank r's n-th draw (of W ranks, m micro-steps per optimizer step) is global micro-batch
    (n // m) * m * W + r * m + n % m, which seeds the draw: W processes together see exactly the batches of one
    process with m * W accumulation steps, and `state_dict()`, the same on every rank, resumes any rank exactly.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, *, seed: int, rank: int = 0,
                 world_size: int = 1, micro_steps: int = 1, device: str | torch.device = "cpu", split: str = "train"):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1} for world_size {world_size}")
        n = len(tokens)
        if n < block_size + 1:
            fit = f"set model.block_size to {n - 1} or less, or use a longer corpus" if n > 1 else "use a longer corpus"
            raise DataError(f"the {split} split has {n} tokens, fewer than block_size + 1 = {block_size + 1}; {fit}")
        self.tokens, self.batch_size, self.block_size, self.seed = tokens, batch_size, block_size, seed
        self.rank, self.world_size, self.micro_steps = rank, world_size, micro_steps
        self.device = torch.device(device)
        self.step = 0
        self._generator = torch.Generator()

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch (x, y), each int64 of shape (B, T), on `device`."""
        B, T = self.batch_size, self.block_size
        m, n = self.micro_steps, self.step
        index = (n // m) * m * self.world_size + self.rank * m + n % m
        # one independent 64-bit seed per (seed, global micro-batch index)
        digest = hashlib.blake2b(f"{self.seed}/{index}".encode(), digest_size=8).digest()
        self._generator.manual_seed(int.from_bytes(digest, "little"))
        self.step += 1
        starts = torch.randint(len(self.tokens) - T, (B,), generator=self._generator).tolist()
        windows = np.stack([self.tokens[i : i + T + 1] for i in starts]).astype(np.int64)  # (B, T+1)
        batch = torch.from_numpy(windows)
        x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()  # (B, T) each; y[b, t] follows x[b, t]
        if self.device.type == "cuda":  # pinned host memory lets the copy overlap with the GPU's work
            x, y = x.pin_memory(), y.pin_memory()
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("seed") != self.seed:
            raise ValueError(f"sampler state was saved with seed {state.get('seed')}, this sampler has seed "
                             f"{self.seed}; resume with the seed of the original run")
        self.step = int(state["step"])


def eval_batches(tokens: np.ndarray, n_batches: int, batch_size: int,
                 block_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A fixed list of `n_batches` (x, y) batches, the same on every call, independent of any training sampler."""
    sampler = BatchSampler(tokens, batch_size, block_size, seed=EVAL_SEED, split="val")
    return [sampler.next() for _ in range(n_batches)]
