"""Tokenizers: text <-> token ids, with a JSON form (`to_dict`, `tokenizer_from_dict`) so a checkpoint can
rebuild them. `CharTokenizer` has one token per character of the corpus; `GPT2Tokenizer` is GPT-2's
BPE through tiktoken, built from the ranks file shipped in `minigpt/assets/` (never the network);
`BPETokenizer` is a byte-level BPE trained on your own corpus (Hugging Face `tokenizers`, docs/data.md).
"""

from __future__ import annotations

import contextlib
import functools
import json
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from importlib import resources
from typing import Any

import tiktoken
import tiktoken.load
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from minigpt.errors import UserError

# GPT-2 BPE as tiktoken's r50k_base encoding defines it. The ranks file holds one line per mergeable
# token, "<base64 of its bytes> <rank>", for ranks 0..50255; the sha256 pins it to that exact table.
# The pattern is GPT-2's pre-tokenization regex, and <|endoftext|> is the one special token, id 50256.
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_PAT_STR = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
GPT2_EOT = "<|endoftext|>"
BPE_MIN_VOCAB = 257  # a byte-level BPE's 256 single bytes, plus <|endoftext|>


@functools.cache
def byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value: byte-level BPE vocabularies (GPT-2's vocab.json, a
    tokenizer.json) spell tokens with these, a space as "Ġ"."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:  # spaces and control bytes move past 255 to stay visible
            symbols[b], extra = chr(256 + extra), extra + 1
    return [symbols[b] for b in range(256)]


def implied_merges(ranks: dict[bytes, int]) -> dict[bytes, tuple[bytes, ...]]:
    """For each token of two bytes or more, the parts that BPE, using only lower ranks, leaves it as: the
    merges that byte-pair ranks (tiktoken's format, where a lower rank merges first) imply."""
    merges = {}
    for token, rank in ranks.items():
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair until two parts remain
            best, i = min((ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:])))
            if best >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges[token] = tuple(parts)
    return merges


class TokenizerError(UserError):
    """Bad input to a tokenizer (unknown character, id out of range, bad saved dict)."""


def preview(items: Sequence[Any], limit: int, sep: str = " ") -> str:
    """The first `limit` items as repr, joined by `sep`, then "..." if there are more: for error messages."""
    return sep.join(repr(x) for x in items[:limit]) + (f"{sep}..." if len(items) > limit else "")


class Tokenizer(ABC):
    """What the rest of minigpt needs from a tokenizer."""

    kind: str
    vocab_size: int
    eot_id: int | None  # id of the end-of-text token; None when there is none (char)

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`. Special-token strings in `text` are encoded as plain text."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text; a tokenizer with a faster batch encoder overrides it."""
        return [self.encode(text) for text in texts]

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of a sequence of ids; `decode(encode(s)) == s`."""

    def decode_token(self, token_id: int) -> str:
        """Text of ONE token; bytes that are not valid UTF-8 on their own become U+FFFD."""
        return self.decode([token_id])

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description that `tokenizer_from_dict` turns back into this tokenizer."""

    def _check_ids(self, ids: Sequence[int]) -> None:
        bad = sorted({int(i) for i in ids if not 0 <= int(i) < self.vocab_size})
        if bad:
            raise TokenizerError(
                f"token ids {preview(bad, 5, ', ')} are outside the {self.kind} vocabulary of "
                f"{self.vocab_size}; decode ids produced by this same tokenizer"
            )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()


class CharTokenizer(Tokenizer):
    """One token per character; id = position of the character in the sorted vocabulary."""

    kind = "char"
    eot_id = None

    def __init__(self, chars: str):
        if not chars or list(chars) != sorted(set(chars)):
            raise TokenizerError("a char vocabulary must be sorted, without repeats and not empty; "
                                 "build it with CharTokenizer.from_text from non-empty text")
        self.chars = chars
        self.vocab_size = len(chars)
        self._stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        """Vocabulary = the sorted set of characters in `text`."""
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - self._stoi.keys())
            raise TokenizerError(f"{len(unknown)} character(s) not in the char vocabulary of {self.vocab_size}: "
                                 f"{preview(unknown, 10)}; use only characters of the training corpus, or set "
                                 "data.tokenizer to gpt2") from None

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)
        return "".join(self.chars[int(i)] for i in ids)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "char", "chars": self.chars}


@functools.lru_cache(maxsize=1)
def _gpt2_encoding() -> tiktoken.Encoding:
    # load_tiktoken_bpe checks the sha256, so a damaged asset fails here instead of tokenizing wrongly.
    with resources.as_file(resources.files("minigpt") / "assets" / "gpt2.tiktoken") as file:
        ranks = tiktoken.load.load_tiktoken_bpe(str(file), expected_hash=GPT2_SHA256)
    return tiktoken.Encoding(name="gpt2", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks,
                             special_tokens={GPT2_EOT: GPT2Tokenizer.eot_id}, explicit_n_vocab=GPT2Tokenizer.vocab_size)


class GPT2Tokenizer(Tokenizer):
    """GPT-2 byte-pair encoding (tiktoken), loaded from the shipped ranks file, offline."""

    kind = "gpt2"
    vocab_size = 50257
    eot_id = 50256

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

    def __reduce__(self) -> tuple[type, tuple]:
        # Pickle by class (a few bytes), not by the 50k-entry rank table; worker processes reload it.
        return GPT2Tokenizer, ()


class BPETokenizer(Tokenizer):
    """A byte-level BPE trained on your corpus with Hugging Face `tokenizers`: GPT-2's recipe (its
    pre-tokenization regex, the 256 bytes as the first tokens, merges learned from pair counts) at the
    vocabulary size you choose, with <|endoftext|> as its one special token. Its JSON (`tokenizer.json`, the
    format transformers loads) is all there is to it: `to_dict` stores it, so a checkpoint carries it."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str):
        try:
            spec = json.loads(tokenizer_json)
            is_bpe = spec["model"]["type"] == "BPE" and spec["pre_tokenizer"]["type"] == "ByteLevel"
            is_bpe = is_bpe and any(t["content"] == GPT2_EOT and t["special"] for t in spec["added_tokens"])
            self._tok = tokenizers.Tokenizer.from_str(tokenizer_json)
        except Exception as e:  # malformed JSON, a missing key; the Rust side raises plain Exception
            raise TokenizerError(f"a saved bpe tokenizer is not valid tokenizer JSON ({str(e)[:80]})") from None
        eot = self._tok.token_to_id(GPT2_EOT)
        if not is_bpe or eot is None:
            raise TokenizerError(f"a saved bpe tokenizer must be a byte-level BPE with {GPT2_EOT}; train it again")
        self.eot_id, self.vocab_size = eot, self._tok.get_vocab_size(with_added_tokens=True)
        self._json = tokenizer_json
        # encode() reads <|endoftext|> in text as plain characters (as GPT2Tokenizer does), so it runs a copy
        # without the added-token matcher; the token itself stays in the vocabulary, and only eot_id emits it.
        self._plain = tokenizers.Tokenizer.from_str(json.dumps({**spec, "added_tokens": []}))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, progress: bool = False) -> BPETokenizer:
        """Learn merges from `texts` (streamed: the trainer keeps counts of distinct pre-tokens, not the text)
        until the vocabulary holds vocab_size tokens, or no pair is left to merge (then it is smaller)."""
        if vocab_size < BPE_MIN_VOCAB:
            raise TokenizerError(f"a byte-level BPE needs at least {BPE_MIN_VOCAB} tokens (256 bytes + "
                                 f"{GPT2_EOT}), got {vocab_size}; set data.vocab_size to {BPE_MIN_VOCAB} or more")
        tok = tokenizers.Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)  # GPT-2's regex, bytes as characters
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[GPT2_EOT],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: any text can be encoded
            show_progress=progress,
        )
        tok.train_from_iterator(texts, trainer)
        return cls(tok.to_str())

    @functools.cached_property
    def _tiktoken(self) -> tiktoken.Encoding | None:
        """tiktoken's encoder over this vocabulary, when its ranks (the token ids) imply exactly the learned
        merges, in the learned order: then both encode alike, as GPT-2's tiktoken ranks and the vocab.json and
        merges.txt derived from them do (hf.gpt2_vocab_and_merges). It encodes several times faster than
        the library. None when they differ; then the library encodes. Checked once, on first use (about a
        second for 8,192 tokens)."""
        model, spell = json.loads(self._json)["model"], {c: b for b, c in enumerate(byte_symbols())}
        ranks = {bytes(spell[c] for c in token): i for token, i in model["vocab"].items() if token != GPT2_EOT}
        learned = []  # (a, b) per merge, in the order learned; older tokenizer.json files write "a b"
        for merge in model["merges"]:
            a, b = merge.split(" ") if isinstance(merge, str) else merge
            learned.append((bytes(spell[c] for c in a), bytes(spell[c] for c in b)))
        in_order = [ranks[a + b] for a, b in learned] == sorted(ranks[a + b] for a, b in learned)
        if not in_order or implied_merges(ranks) != {a + b: (a, b) for a, b in learned}:
            return None
        return tiktoken.Encoding(name="minigpt-bpe", pat_str=GPT2_PAT_STR, mergeable_ranks=ranks, special_tokens={})

    def encode(self, text: str) -> list[int]:
        # the library itself: a prompt is short, and this needs no check of the ranks first (encode_batch does)
        return self._plain.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        if self._tiktoken is not None:  # data preparation: tiktoken, which gives the same ids, faster
            return [self._tiktoken.encode_ordinary(text) for text in texts]
        # the library's batch encoder, without offsets; several threads unless TOKENIZERS_PARALLELISM=false
        return [e.ids for e in self._plain.encode_batch_fast(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        self._check_ids(ids)  # the byte-level decoder turns bytes that are not UTF-8 into U+FFFD
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def to_json(self) -> str:
        """The tokenizer.json text transformers' AutoTokenizer loads."""
        return self._json

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "bpe", "json": self._json}

    def __reduce__(self) -> tuple[type, tuple]:
        return BPETokenizer, (self._json,)


def tokenizer_from_dict(d: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `Tokenizer.to_dict()` output (e.g. read from meta.json or a checkpoint)."""
    kind = d.get("kind") if isinstance(d, dict) else None
    if kind == "char" and isinstance(d.get("chars"), str):
        return CharTokenizer(d["chars"])
    if kind == "gpt2" and d.get("sha256", GPT2_SHA256) == GPT2_SHA256:
        return GPT2Tokenizer()
    if kind == "bpe" and isinstance(d.get("json"), str):
        return BPETokenizer(d["json"])
    raise TokenizerError(f"cannot rebuild a saved tokenizer of kind {kind!r}: this minigpt knows char (with a 'chars' "
                         f"string), gpt2 (ranks sha256 {GPT2_SHA256[:12]}...) and bpe (with its 'json'); "
                         "prepare the data again")


def default_prompt(tokenizer: Tokenizer) -> tuple[str, list[int]]:
    """What a sample starts from when no prompt is given: <|endoftext|> if there is one, else a
    newline, else (a char vocabulary without newlines) a space or the first character."""
    if tokenizer.eot_id is not None:
        return "", [tokenizer.eot_id]
    for text in ("\n", " "):
        with contextlib.suppress(ValueError):
            return text, tokenizer.encode(text)
    return tokenizer.decode([0]), [0]
