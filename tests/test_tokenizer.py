"""Tokenizers: round trips, GPT-2 ids, char vocabulary, JSON form, errors."""

import json
import pickle
import socket
from pathlib import Path

import pytest

from minigpt import tokenizer as tokenizer_module
from minigpt.config import TOKENIZERS
from minigpt.tokenizer import (
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    TokenizerError,
    tokenizer_from_dict,
)

SHAKESPEARE = Path(__file__).resolve().parent.parent / "data" / "shakespeare" / "input.txt"
MIXED = "Hello, wörld! 世界 🙂\n\tcafé\r\n  spaces  end "
BPE = BPETokenizer.train([MIXED] * 20, 280)  # a byte-level BPE trained in milliseconds (tests/test_bpe.py: more)


@pytest.fixture(scope="module")
def shakespeare() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


def test_char_vocab_is_sorted_set_of_training_text(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    assert isinstance(tok, Tokenizer)
    assert tok.vocab_size == 65
    assert tok.chars == "".join(sorted(set(shakespeare)))
    assert tok.eot_id is None
    assert tok.encode("\n") == [0]  # "\n" sorts first


def test_char_round_trip(shakespeare):
    tok = CharTokenizer.from_text(shakespeare)
    ids = tok.encode(shakespeare)
    assert len(ids) == len(shakespeare)
    assert tok.decode(ids) == shakespeare
    tok2 = CharTokenizer.from_text(MIXED)
    assert tok2.decode(tok2.encode(MIXED)) == MIXED


def test_char_unknown_characters_named():
    tok = CharTokenizer.from_text("abc")
    message = r"2 character\(s\) not in the char vocabulary of 3: 'x' 'é'; .* set data.tokenizer to gpt2"
    with pytest.raises(TokenizerError, match=message):
        tok.encode("abxcé")


def test_char_decode_rejects_out_of_range_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(TokenizerError, match="token ids 3, 7 are outside the char vocabulary of 3"):
        tok.decode([0, 3, 7])


def test_char_rejects_unsorted_vocabulary():
    with pytest.raises(TokenizerError, match="sorted"):
        CharTokenizer("ba")


def test_gpt2_known_ids():
    tok = GPT2Tokenizer()
    assert tok.encode("Hello world") == [15496, 995]
    assert tok.vocab_size == 50257
    assert tok.eot_id == 50256
    assert tok.decode_token(50256) == "<|endoftext|>"
    # Special-token text in the input is plain text, never the special id.
    assert 50256 not in tok.encode("a<|endoftext|>b")


def test_gpt2_round_trip_and_shakespeare_count(shakespeare):
    tok = GPT2Tokenizer()
    ids = tok.encode(shakespeare)
    assert len(ids) == 338_025
    assert tok.decode(ids) == shakespeare
    assert tok.decode(tok.encode(MIXED)) == MIXED


def test_gpt2_decode_token_replaces_partial_utf8():
    tok = GPT2Tokenizer()
    ids = tok.encode("🙂")
    assert len(ids) > 1  # the emoji's 4 bytes span several tokens
    assert "\ufffd" in tok.decode_token(ids[0])
    assert tok.decode_token(tok.encode(" the")[0]) == " the"


@pytest.mark.parametrize("tok", [CharTokenizer.from_text(MIXED), GPT2Tokenizer(), BPE], ids=["char", "gpt2", "bpe"])
def test_dict_round_trip_through_json(tok):
    d = json.loads(json.dumps(tok.to_dict()))
    rebuilt = tokenizer_from_dict(d)
    assert type(rebuilt) is type(tok)
    assert rebuilt == tok
    assert rebuilt.encode(MIXED) == tok.encode(MIXED)


def test_gpt2_pickles_small():
    tok = GPT2Tokenizer()
    data = pickle.dumps(tok)
    assert len(data) < 1000  # pickled by description, not by its 50k-entry rank table
    assert pickle.loads(data).encode("Hello world") == [15496, 995]


def test_gpt2_loads_without_network(monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tokenizer tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    tokenizer_module._gpt2_encoding.cache_clear()
    assert GPT2Tokenizer().encode("Hello world") == [15496, 995]


def test_kinds_agree_with_the_config():
    # every data.tokenizer that config.py accepts can be rebuilt from its saved form
    saved = {"char": {"chars": "ab"}, "bpe": {"json": BPE.to_json()}}
    assert all(tokenizer_from_dict({"kind": kind, **saved.get(kind, {})}).kind == kind for kind in TOKENIZERS)


def test_bad_kinds_and_dicts():
    with pytest.raises(TokenizerError, match="non-empty text"):
        CharTokenizer.from_text("")
    knows = (
        r"this minigpt knows char \(with a 'chars' string\), gpt2 \(ranks sha256 306cd27f03c1\.\.\.\) "
        r"and bpe \(with its 'json'\)"
    )
    with pytest.raises(TokenizerError, match=f"of kind 'sentencepiece': {knows}"):
        tokenizer_from_dict({"kind": "sentencepiece"})
    with pytest.raises(TokenizerError, match=f"of kind 'char': {knows}"):
        tokenizer_from_dict({"kind": "char"})
    with pytest.raises(TokenizerError, match=f"of kind 'gpt2': {knows}"):
        tokenizer_from_dict({"kind": "gpt2", "sha256": "0" * 64})
    with pytest.raises(ValueError, match=f"of kind None: {knows}"):  # TokenizerError is a ValueError
        tokenizer_from_dict([])


def test_bpe_round_trip_and_its_bounds():
    assert BPE.vocab_size == 280 and BPE.decode(BPE.encode(MIXED)) == MIXED
    assert len(BPE.encode(MIXED)) < len(MIXED.encode())  # merges learned from the text
    assert BPE.encode("<|endoftext|>") != [BPE.eot_id] and BPE.decode([BPE.eot_id]) == "<|endoftext|>"
    with pytest.raises(TokenizerError, match="at least 257 tokens"):
        BPETokenizer.train([MIXED], 256)
    with pytest.raises(TokenizerError, match="outside the bpe vocabulary of 280"):
        BPE.decode([280])
    with pytest.raises(TokenizerError, match="must be a byte-level BPE with <\\|endoftext\\|>"):
        BPETokenizer(json.dumps({**json.loads(BPE.to_json()), "added_tokens": []}))  # no <|endoftext|>


def test_bpe_encodes_with_tiktoken_only_when_its_ranks_imply_the_learned_merges(shakespeare):
    tok = BPETokenizer.train([shakespeare[:200_000]], 600)
    assert tok._tiktoken is not None  # trained merges in id order: tiktoken's ranks give the same tokens
    library = [e.ids for e in tok._plain.encode_batch([shakespeare[:20_000], MIXED], add_special_tokens=False)]
    assert tok.encode_batch([shakespeare[:20_000], MIXED]) == library
    # the same vocabulary with two merges swapped learns another order: only the library applies it faithfully
    spec = json.loads(tok.to_json())
    merges = spec["model"]["merges"]
    merges[10], merges[11] = merges[11], merges[10]
    swapped = BPETokenizer(json.dumps(spec))
    assert swapped._tiktoken is None
    assert swapped.encode_batch([MIXED]) == [swapped._plain.encode(MIXED).ids]
    assert swapped.decode(swapped.encode_batch([MIXED])[0]) == MIXED
