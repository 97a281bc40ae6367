"""Tokenizers: text <-> token ids, with a JSON form so a checkpoint can rebuild them.

Two kinds, one interface (`Tokenizer`):

- `CharTokenizer`: one token per character; the vocabulary is the sorted set of characters
  of the training text (65 for tiny Shakespeare). No end-of-text token.
- `GPT2Tokenizer`: GPT-2's byte-pair encoding through tiktoken, built from the ranks file
  shipped in `minigpt/assets/gpt2.tiktoken` (never the network). 50,257 ids, the last one
  being `<|endoftext|>`.

`tok.to_dict()` gives a small JSON-ready dict; `tokenizer_from_dict(d)` rebuilds the tokenizer.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load

TOKENIZER_KINDS: tuple[str, ...] = ("char", "gpt2")

# GPT-2 BPE as tiktoken's r50k_base encoding defines it. The ranks file holds one line per mergeable
# token, "<base64 of its bytes> <rank>", for ranks 0..50255; the sha256 pins it to that exact table.
# The pattern is GPT-2's pre-tokenization regex, and <|endoftext|> is the one special token, id 50256.
GPT2_ASSET = "gpt2.tiktoken"
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = "<|endoftext|>"
GPT2_EOT_ID = 50256
GPT2_VOCAB_SIZE = 50257


class TokenizerError(ValueError):
    """Bad input to a tokenizer (unknown character, id out of range, bad saved dict)."""


class Tokenizer(ABC):
    """What the rest of minigpt needs from a tokenizer."""

    kind: str
    vocab_size: int
    eot_id: int | None
    """Id of the end-of-text token, or None when the tokenizer has none (char)."""

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`. Special-token strings in `text` are encoded as plain text."""

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids; `decode(encode(s)) == s`."""

    @abstractmethod
    def decode_token(self, token_id: int) -> str:
        """Text of ONE token; bytes that are not valid UTF-8 on their own become U+FFFD."""

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description that `tokenizer_from_dict` turns back into this tokenizer."""

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = sorted({int(i) for i in ids if not 0 <= int(i) < self.vocab_size})
        if bad:
            shown = ", ".join(str(i) for i in bad[:5]) + (", ..." if len(bad) > 5 else "")
            raise TokenizerError(
                f"token ids {shown} are outside the {self.kind} vocabulary of {self.vocab_size}; "
                "decode ids produced by this same tokenizer"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


class CharTokenizer(Tokenizer):
    """One token per character; id = position of the character in the sorted vocabulary."""

    kind = "char"
    eot_id = None

    def __init__(self, chars: str | Sequence[str]):
        chars = list(chars)
        if not chars:
            raise TokenizerError("a char tokenizer needs at least one character; build it from non-empty text")
        if any(len(c) != 1 for c in chars):
            raise TokenizerError("a char tokenizer's vocabulary must be single characters")
        if chars != sorted(set(chars)):
            raise TokenizerError("a char tokenizer's vocabulary must be sorted and without repeats; use CharTokenizer.from_text")
        self.chars = "".join(chars)
        self.vocab_size = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the sorted set of characters in `text`."""
        return cls(sorted(set(text)))

    def encode(self, text: str) -> list[int]:
        stoi = self._stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - stoi.keys())
            shown = " ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            raise TokenizerError(
                f"{len(unknown)} character(s) not in the char vocabulary of {self.vocab_size}: {shown}; "
                "use only characters of the training corpus, or set data.tokenizer to gpt2"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return "".join(self.chars[int(i)] for i in ids)

    def decode_token(self, token_id: int) -> str:
        return self.decode([token_id])

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


@functools.lru_cache(maxsize=1)
def _gpt2_encoding() -> tiktoken.Encoding:
    # load_tiktoken_bpe checks the sha256, so a damaged asset fails here instead of tokenizing wrongly.
    path = resources.files("minigpt") / "assets" / GPT2_ASSET
    with resources.as_file(path) as file:
        ranks = tiktoken.load.load_tiktoken_bpe(str(file), expected_hash=GPT2_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=GPT2_PAT_STR,
        mergeable_ranks=ranks,
        special_tokens={GPT2_EOT: GPT2_EOT_ID},
        explicit_n_vocab=GPT2_VOCAB_SIZE,
    )


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-pair encoding (tiktoken), loaded from the shipped ranks file, offline."""

    kind = "gpt2"
    vocab_size = GPT2_VOCAB_SIZE
    eot_id = GPT2_EOT_ID

    def __init__(self) -> None:
        self._enc = _gpt2_encoding()

    def encode(self, text: str) -> list[int]:
        return self._enc.encode_ordinary(text)

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return self._enc.decode([int(i) for i in ids], errors="replace")

    def decode_token(self, token_id: int) -> str:
        self._check_ids([token_id])
        return self._enc.decode_single_token_bytes(int(token_id)).decode("utf-8", errors="replace")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "gpt2", "sha256": GPT2_SHA256}

    # Pickle by description (a few bytes), not by the 50k-entry rank table; worker processes reload it.
    def __getstate__(self) -> dict[str, Any]:
        return {"sha256": GPT2_SHA256}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._enc = _gpt2_encoding()


def build_tokenizer(kind: str, text: str | None = None) -> Tokenizer:
    """A new tokenizer of `kind`; "char" needs the training `text` for its vocabulary."""
    if kind == "gpt2":
        return GPT2Tokenizer()
    if kind == "char":
        if not text:
            raise TokenizerError("the char tokenizer is built from the training text; pass non-empty text")
        return CharTokenizer.from_text(text)
    raise TokenizerError(f"unknown tokenizer {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. read from meta.json or a checkpoint)."""
    if not isinstance(d, dict) or "kind" not in d:
        raise TokenizerError(f"a saved tokenizer must be a dict with a 'kind' key, got {type(d).__name__}")
    kind = d["kind"]
    if kind == "char":
        chars = d.get("chars")
        if not isinstance(chars, str):
            raise TokenizerError("a saved char tokenizer needs a 'chars' string; the file is damaged, prepare the data again")
        return CharTokenizer(chars)
    if kind == "gpt2":
        if d.get("sha256", GPT2_SHA256) != GPT2_SHA256:
            raise TokenizerError(
                f"saved gpt2 tokenizer has ranks sha256 {d['sha256']}, this minigpt ships {GPT2_SHA256}; "
                "prepare the data again with this version"
            )
        return GPT2Tokenizer()
    raise TokenizerError(f"unknown tokenizer kind {kind!r}; choose one of {', '.join(TOKENIZER_KINDS)}")


def default_prompt(tokenizer: Tokenizer) -> tuple[str, list[int]]:
    """What a sample starts from when no prompt is given: <|endoftext|> if there is one, else a
    newline, else (a char vocabulary without newlines) a space or the first character."""
    if tokenizer.eot_id is not None:
        return "", [tokenizer.eot_id]
    for text in ("\n", " "):
        try:
            return text, tokenizer.encode(text)
        except ValueError:
            pass
    first = tokenizer.decode([0])
    return first, [0]
