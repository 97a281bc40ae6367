"""Real GPT-2 in and out: Hugging Face GPT-2 weights into minigpt's GPT, and a run out as an HF folder.

transformers' GPT2LMHeadModel is the network minigpt's GPT builds with the gpt2 preset; only the storage
differs, so the conversion is a key-for-key copy with three rules:
  * its Linear layers are Conv1D, which store the weight as (in, out): transpose to nn.Linear's (out, in);
  * attn.bias and attn.masked_bias (older files) are causal-mask buffers, not weights: skipped;
  * lm_head.weight is wte.weight (tied), so files leave it out.

    python -m minigpt.hf --run runs/NAME --out gpt2-shakespeare/    # export a run for transformers
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from functools import cache
from pathlib import Path
from typing import Any

import torch

from minigpt import cli
from minigpt.checkpoint import empty_model, find_checkpoint, load_model
from minigpt.config import ExportConfig, ModelConfig
from minigpt.model import GPT
from minigpt.tokenizer import CharTokenizer, GPT2Tokenizer, Tokenizer

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


class HFError(ValueError):
    """A Hugging Face source or export that minigpt cannot use; the message says why and what to do."""


# -- in: a folder or a hub name -> ModelConfig and weights --------------------------------------------


def find(source: str) -> Path:
    """The folder of a GPT-2: a local HF folder, or a hub name from huggingface_hub's cache (downloaded
    once when online; HF_HUB_OFFLINE=1 never tries the network)."""
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise HFError(f"{path} has no config.json, so it is not a Hugging Face model folder")
        return path
    if path.suffix or source.startswith((".", "/", "~")) or source.count("/") > 1:
        raise HFError(f"no folder {source}; give a Hugging Face model folder or a hub name such as gpt2")
    from huggingface_hub import snapshot_download

    files = ["config.json", "model.safetensors"]
    try:
        return Path(snapshot_download(source, allow_patterns=files, local_files_only=True))
    except Exception:  # not cached yet: download it, unless offline
        pass
    try:
        return Path(snapshot_download(source, allow_patterns=files))
    except Exception as e:
        reason = (str(e).strip() or type(e).__name__).splitlines()[0][:160]
        raise HFError(
            f"{source!r} is not in the Hugging Face cache and could not be downloaded ({reason}); run once with "
            f"network access to download it (about 0.5 GB for gpt2, kept in {_hub_cache()}), or pass a folder "
            "with config.json and model.safetensors"
        ) from None


def _hub_cache() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def model_config(folder: Path, *, block_size: int | None = None, dropout: float = 0.0,
                 attn_impl: str = "manual") -> ModelConfig:  # fmt: skip
    """The ModelConfig of an HF GPT-2 folder's config.json; block_size may crop its context."""
    hf = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if hf.get("model_type") != "gpt2":
        raise HFError(f"{folder} holds a {hf.get('model_type')!r} model; minigpt loads GPT-2 (model_type gpt2) only")
    unsupported = {
        "activation_function": hf.get("activation_function", "gelu_new") not in _ACTIVATIONS,
        "scale_attn_by_inverse_layer_idx": hf.get("scale_attn_by_inverse_layer_idx", False),
        "layer_norm_epsilon": hf.get("layer_norm_epsilon", 1e-5) != 1e-5,
        "add_cross_attention": hf.get("add_cross_attention", False),
    }
    for key in (k for k, bad in unsupported.items() if bad):
        raise HFError(f"{folder}/config.json sets {key}={hf[key]!r}, which minigpt's GPT does not implement")
    n_positions = hf.get("n_positions", 1024)
    if block_size is not None and block_size > n_positions:
        raise HFError(f"model.block_size={block_size} is longer than the {n_positions} positions GPT-2 learned; "
                      f"use {n_positions} or less")  # fmt: skip
    return ModelConfig(
        vocab_size=hf["vocab_size"], block_size=block_size or n_positions, n_layer=hf["n_layer"],
        n_head=hf["n_head"], n_embd=hf["n_embd"], d_ff=hf.get("n_inner"), dropout=dropout, bias=True,
        tie_weights=hf.get("tie_word_embeddings", True), attn_impl=attn_impl,
        attn_score="scaled_dot" if hf.get("scale_attn_weights", True) else "dot",
        activation=_ACTIVATIONS[hf.get("activation_function", "gelu_new")],
    )  # fmt: skip


def with_shape(cfg: ModelConfig, *, crop: bool = True) -> ModelConfig:
    """cfg with the shape of the GPT-2 that cfg.init_from names; with crop, cfg.block_size crops its context."""
    folder = find(str(cfg.init_from))
    full = model_config(folder)
    block_size = min(cfg.block_size, full.block_size) if crop else None
    shape = model_config(folder, block_size=block_size, dropout=cfg.dropout, attn_impl=cfg.attn_impl)
    return ModelConfig(**{**dataclasses.asdict(shape), "init_from": cfg.init_from})


def stored_params(folder: Path) -> int:
    """Parameters stored in an HF folder's weights, read from the file's header (mask buffers left out)."""
    if not (folder / "model.safetensors").is_file():
        return sum(v.numel() for k, v in read_weights(folder).items() if not k.endswith(_BUFFERS))
    from safetensors import safe_open

    with safe_open(folder / "model.safetensors", framework="pt") as f:
        shapes = [f.get_slice(k).get_shape() for k in f.keys() if not k.endswith(_BUFFERS)]
    return sum(math.prod(shape) for shape in shapes)


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict in model.safetensors, else pytorch_model.bin (loaded without running code)."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(folder / "model.safetensors")
    if (folder / "pytorch_model.bin").is_file():
        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise HFError(f"{folder} has no model.safetensors or pytorch_model.bin; save the model with save_pretrained")


def from_hf_state(hf_state: dict[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """An HF GPT-2 state dict as minigpt GPT's, for `config` (whose block_size may crop wpe)."""
    state = {}
    for key, value in hf_state.items():
        key = key.removeprefix("transformer.")
        if key.endswith(_BUFFERS):
            continue
        state[key] = value.t() if key.endswith(_CONV1D) else value
    if "wpe.weight" in state:
        state["wpe.weight"] = state["wpe.weight"][: config.block_size]
    if config.tie_weights and "wte.weight" in state:
        state["lm_head.weight"] = state["wte.weight"]
    return state


def load(source: str, *, block_size: int | None = None, dropout: float = 0.0, attn_impl: str = "manual",
         device: torch.device | str = "cpu") -> GPT:  # fmt: skip
    """A Hugging Face GPT-2 (hub name or folder) as minigpt's GPT, in eval mode."""
    folder = find(source)
    config = model_config(folder, block_size=block_size, dropout=dropout, attn_impl=attn_impl)
    model = empty_model(config)  # no time spent on a random init that the weights replace
    missing, unexpected = model.load_state_dict(from_hf_state(read_weights(folder), config), strict=False, assign=True)
    if missing or unexpected:
        raise HFError(f"{folder}'s weights do not fit its config.json: missing {missing[:3]}, unexpected {unexpected[:3]}")
    if config.tie_weights:
        model.lm_head.weight = model.wte.weight
    return model.to(device).eval()


# -- out: a run -> an HF folder --------------------------------------------------------------------------


def hf_config(config: ModelConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """config.json for transformers' GPT2LMHeadModel; refuses what GPT-2's format cannot say."""
    refusals = {
        "model.attn_score='additive'": config.attn_score == "additive",
        f"model.attn_window={config.attn_window}": config.attn_window is not None,
        "model.tie_weights=false (an untied LM head)": not config.tie_weights,
        "model.bias=false": not config.bias,
        f"model.n_head * model.d_head = {config.attn_dim} != model.n_embd = {config.n_embd}": config.attn_dim != config.n_embd,
    }  # fmt: skip
    for setting in (s for s, refused in refusals.items() if refused):
        raise HFError(f"GPT-2's format cannot express {setting}; export a model trained without it")
    eot = tokenizer.eot_id if tokenizer is not None else None
    return {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
        "n_positions": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
        "n_head": config.n_head, "n_inner": config.d_ff, "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
        "scale_attn_weights": config.attn_score == "scaled_dot", "tie_word_embeddings": True,
        "resid_pdrop": config.dropout, "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
        "bos_token_id": eot, "eos_token_id": eot,
    }  # fmt: skip


def to_hf_state(model: GPT) -> dict[str, torch.Tensor]:
    """minigpt GPT's weights under transformers' GPT2LMHeadModel names (the tied lm_head left out)."""
    return {
        f"transformer.{key}": (value.t() if key.endswith(_CONV1D) else value).contiguous()
        for key, value in model.state_dict().items()
        if key != "lm_head.weight"
    }


def export(model: GPT, tokenizer: Tokenizer, out: str | Path) -> Path:
    """Write model and tokenizer as a folder that transformers' AutoModelForCausalLM.from_pretrained loads.

    GPT-2 BPE runs get GPT-2's own tokenizer files (vocab.json, merges.txt), so AutoTokenizer loads them
    too. Char runs get minigpt_tokenizer.json: the characters in id order (id i is chars[i]); transformers
    has no char tokenizer of that kind, so `[chars.index(c) for c in text]` encodes. The folder appears
    whole or not at all: it is written next to `out` and renamed into place.
    """
    from safetensors.torch import save_file

    out = Path(out)
    if out.exists():
        raise HFError(f"{out} already exists; choose a new folder for the export")
    config = hf_config(model.config, tokenizer)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    try:
        save_file(to_hf_state(model), tmp / "model.safetensors", metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        if isinstance(tokenizer, GPT2Tokenizer):
            vocab, merges = gpt2_vocab_and_merges()
            (tmp / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            (tmp / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
            special = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}
            tok_config = {"tokenizer_class": "GPT2Tokenizer", "model_max_length": model.config.block_size, **special}
            (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
        elif isinstance(tokenizer, CharTokenizer):
            (tmp / "minigpt_tokenizer.json").write_text(json.dumps(tokenizer.to_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


@cache
def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-in for each byte value (its vocab.json spells tokens with these)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for b in range(256):
        if b in printable:
            symbols[b] = chr(b)
        else:  # spaces and control bytes move past 255 to stay visible
            symbols[b], extra = chr(256 + extra), extra + 1
    return [symbols[b] for b in range(256)]


def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocab.json and merges.txt, rebuilt from the BPE ranks minigpt ships (tiktoken's format).

    Each multi-byte token's merge is the pair of tokens that BPE, using only lower ranks, leaves it as.
    """
    ranks = GPT2Tokenizer()._enc._mergeable_ranks  # token bytes -> rank
    spell = _byte_symbols()

    def as_text(token: bytes) -> str:
        return "".join(spell[b] for b in token)

    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) < 2:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:  # merge the lowest-ranked adjacent pair until two parts remain
            pairs = [(ranks.get(a + b, rank), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best, i = min(pairs)
            if best >= rank:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        merges.append(f"{as_text(parts[0])} {as_text(parts[1])}")
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    vocab["<|endoftext|>"] = GPT2Tokenizer().eot_id
    return vocab, merges


# -- the export command ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = cli.parse(ExportConfig, sys.argv[1:] if argv is None else argv, prog="python -m minigpt.hf")
        path, _ = find_checkpoint(cfg.ckpt, cfg.run)
        model, tokenizer, _ = load_model(path, "cpu")
        out = export(model, tokenizer, cfg.out or path.parent / "hf")
    except SystemExit as e:
        return e.code or 0
    except BrokenPipeError:
        return cli.reader_left()
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
