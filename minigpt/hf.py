"""Real GPT-2 in and out: Hugging Face GPT-2 weights into minigpt's GPT, and a run out as an HF folder.

transformers' GPT2LMHeadModel is the network minigpt's GPT builds with the gpt2 preset; only the storage
differs, so the conversion is a key-for-key copy with three rules:
  * its Linear layers are Conv1D, which store the weight as (in, out): transpose to nn.Linear's (out, in);
  * attn.bias and attn.masked_bias (older files) are causal-mask buffers, not weights: skipped;
  * lm_head.weight is wte.weight (tied), so files leave it out.

    python -m minigpt.hf --run runs/NAME --out gpt2-shakespeare/    # export a run for transformers
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import torch

from minigpt import cli, entry
from minigpt.checkpoint import (
    CheckpointError,
    bad_values,
    find_checkpoint,
    is_state_dict,
    load_model,
    read_torch_file,
    weights_mismatch,
)
from minigpt.config import ExportConfig, ModelConfig
from minigpt.errors import UserError
from minigpt.model import GPT
from minigpt.tokenizer import (
    GPT2_EOT,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    Tokenizer,
    byte_symbols,
    implied_merges,
)

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
_BUFFERS = (".attn.bias", ".attn.masked_bias")
_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


class HFError(UserError):
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


_SHAPE = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")
_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_REQUIRED = object()


def read_config(folder: Path) -> dict[str, Any]:
    """The settings in a folder's config.json; a file that does not hold them is refused, naming it."""
    path = folder / "config.json"
    try:
        hf = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise HFError(f"cannot read {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # bad JSON or not UTF-8 (both ValueErrors), or nested beyond reason
        reason = str(e) if isinstance(e, ValueError) else "nested too deeply"
        raise HFError(f"{path} is not valid JSON ({reason[:120]}); save the model again with save_pretrained") from None
    if not isinstance(hf, dict):
        raise HFError(
            f"{path} holds a JSON {_JSON_TYPES.get(type(hf), type(hf).__name__)}, not an object of settings "
            'such as {"model_type": "gpt2", "n_layer": 12, ...}; save the model again with save_pretrained'
        )
    return hf


def model_config(
    folder: Path, *, block_size: int | None = None, dropout: float = 0.0, attn_impl: str = "manual"
) -> ModelConfig:
    """The ModelConfig of an HF GPT-2 folder's config.json; block_size may crop its context. Each setting
    used is checked for its type (JSON gives no guarantee), and the shape must be one a GPT-2 can have."""
    path, hf = folder / "config.json", read_config(folder)
    if hf.get("model_type") != "gpt2":
        model_type = _brief(hf.get("model_type"))
        raise HFError(f"{folder} holds a {model_type} model; minigpt loads GPT-2 (model_type gpt2) only")
    s = _gpt2_settings(path, hf)
    n_positions = s["n_positions"]
    if block_size is not None and block_size > n_positions:
        raise HFError(
            f"model.block_size={block_size} is longer than the {n_positions} positions GPT-2 learned; "
            f"use {n_positions} or less"
        )
    return ModelConfig(
        vocab_size=s["vocab_size"],
        block_size=block_size or n_positions,
        n_layer=s["n_layer"],
        n_head=s["n_head"],
        n_embd=s["n_embd"],
        d_ff=s["n_inner"],
        dropout=dropout,
        bias=True,
        tie_weights=s["tie_word_embeddings"],
        attn_impl=attn_impl,
        attn_score="scaled_dot" if s["scale_attn_weights"] else "dot",
        activation=_ACTIVATIONS[s["activation_function"]],
    )


def _gpt2_settings(path: Path, hf: dict[str, Any]) -> dict[str, Any]:
    """The settings of config.json (read from `path` into `hf`) that model_config uses, each checked for its
    type and refused where minigpt's GPT does not implement it."""

    def setting(key: str, valid: Any, kind: str, default: Any = _REQUIRED) -> Any:
        if key not in hf and default is _REQUIRED:
            raise HFError(
                f"{path} has no {key}; a GPT-2's config.json gives {', '.join(_SHAPE)}: save the model "
                "again with save_pretrained"
            )
        value = hf.get(key, default)
        if not valid(value):
            raise HFError(f"{path}: {key} must be {kind} (got {_brief(value)}); the file is damaged or was edited")
        return value

    def positive(v: Any) -> bool:
        return type(v) is int and v > 0

    shape = {key: setting(key, positive, "a positive integer") for key in _SHAPE}
    n_inner = setting("n_inner", lambda v: v is None or positive(v), "a positive integer or null", None)
    switches = {
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "scale_attn_by_inverse_layer_idx": False,
        "add_cross_attention": False,
    }
    flags = {key: setting(key, lambda v: isinstance(v, bool), "true or false", on) for key, on in switches.items()}
    activation = setting("activation_function", lambda v: isinstance(v, str), "a string", "gelu_new")
    epsilon = setting("layer_norm_epsilon", lambda v: type(v) in (int, float), "a number", 1e-5)
    unsupported = {
        "activation_function": activation not in _ACTIVATIONS,
        "scale_attn_by_inverse_layer_idx": flags["scale_attn_by_inverse_layer_idx"],
        "layer_norm_epsilon": epsilon != 1e-5,
        "add_cross_attention": flags["add_cross_attention"],
    }
    for key in (k for k, bad in unsupported.items() if bad):
        raise HFError(f"{path} sets {key}={hf[key]!r}, which minigpt's GPT does not implement")
    if shape["n_embd"] % shape["n_head"]:  # GPT-2 has no d_head of its own: n_embd is cut into n_head heads
        raise HFError(
            f"{path}: n_embd={shape['n_embd']} is not divisible by n_head={shape['n_head']}, so no GPT-2 has this "
            "shape (it cuts n_embd into n_head equal heads); the file is damaged or was edited"
        )
    return {**shape, **flags, "n_inner": n_inner, "activation_function": activation}


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def with_shape(cfg: ModelConfig, *, crop: bool = True) -> ModelConfig:
    """cfg with the shape of the GPT-2 that cfg.init_from names; with crop, cfg.block_size crops its context."""
    return _reshaped(cfg, model_config(find(str(cfg.init_from))), crop)


def _reshaped(cfg: ModelConfig, full: ModelConfig, crop: bool) -> ModelConfig:
    """full (a config.json's shape) with cfg's dropout, attention path and init_from; with crop, cfg.block_size
    crops its context."""
    block_size = min(cfg.block_size, full.block_size) if crop else full.block_size
    return full.replace(block_size=block_size, dropout=cfg.dropout, attn_impl=cfg.attn_impl, init_from=cfg.init_from)


def fine_tune_config(cfg: ModelConfig) -> ModelConfig:
    """with_shape(cfg), for train.py: before any data or model is built, the GPT-2 that cfg.init_from names
    must have weights that fit its config.json (read from the file's header where it has one) and GPT-2's
    vocabulary, as fine-tuning reads text with GPT-2's tokenizer. config.json is read once."""
    folder = find(str(cfg.init_from))
    full = model_config(folder)
    check_weights(folder, full, stored_shapes(folder))
    check_gpt2_vocab(folder, "model.init_from", full.vocab_size)
    return _reshaped(cfg, full, crop=True)


def check_gpt2_vocab(folder: Path, flag: str, vocab_size: int | None = None) -> None:
    """Refuse a folder whose vocabulary is not GPT-2's (text is read with GPT-2's tokenizer), saying where it
    came from when it is a char-level or bpe minigpt run's export. vocab_size: its config.json's, if already read."""
    if vocab_size is None:
        vocab_size = model_config(folder).vocab_size
    if vocab_size == GPT2Tokenizer.vocab_size:
        return
    fix = "give a GPT-2 with GPT-2's vocabulary"
    kind = "char-level" if (folder / "minigpt_tokenizer.json").is_file() else "bpe"  # what hf.export writes for each
    if kind == "char-level" or (folder / "tokenizer.json").is_file():
        fix = (
            f"it was exported from a {kind} minigpt run: use that run's checkpoint instead "
            "(sample.py --run RUN_DIR, or train.py --resume RUN_DIR)"
        )
    raise HFError(
        f"{flag} {folder} has a vocabulary of {vocab_size} tokens, not GPT-2's {GPT2Tokenizer.vocab_size}, "
        f"and minigpt reads its text with GPT-2's tokenizer; {fix}"
    )


def weights_file(folder: Path) -> Path:
    """The folder's model.safetensors, else its pytorch_model.bin."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise HFError(f"{folder} has no model.safetensors or pytorch_model.bin; save the model with save_pretrained")


def stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    """Each stored tensor's shape by its HF name (mask buffers left out), read from model.safetensors'
    header alone; a pytorch_model.bin has no header, so it is loaded."""
    file = weights_file(folder)
    if file.suffix != ".safetensors":
        return {k: tuple(v.shape) for k, v in _read(file).items()}
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if not k.endswith(_BUFFERS)}
    except Exception as e:  # SafetensorError: truncated, damaged, or not safetensors at all
        raise _damaged(file, e) from None


def stored_params(folder: Path) -> int:
    """Parameters stored in an HF folder's weights (mask buffers left out)."""
    return sum(math.prod(shape) for shape in stored_shapes(folder).values())


def _damaged(file: Path, e: Exception) -> HFError:
    if isinstance(e, OSError):
        return HFError(f"cannot read {file}: {e.strerror or e}")
    reason = " ".join(str(e).split())[:120] or type(e).__name__
    return HFError(f"{file} is damaged or not a safetensors file ({reason}); download or export the model again")


def _read(file: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file by HF name (mask buffers left out), loaded without running code."""
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(file)
        except Exception as e:  # SafetensorError: truncated, damaged, or not safetensors at all
            raise _damaged(file, e) from None
    else:
        try:
            state = read_torch_file(file, "PyTorch weights file")
        except CheckpointError as e:
            raise HFError(str(e)) from None
        if not is_state_dict(state):
            kind = type(state).__name__
            raise HFError(f"{file} holds a {kind}, not a dict of named tensors; save the model with save_pretrained")
    return {k: v for k, v in state.items() if not k.endswith(_BUFFERS)}


def check_weights(folder: Path, config: ModelConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse stored tensors (HF names and shapes) that are not the GPT-2 config.json describes (config,
    uncropped): no tensor is guessed at, and the position table is never cropped to fit silently."""
    ours = {k.removeprefix("transformer."): shape for k, shape in shapes.items()}
    if config.tie_weights and "wte.weight" in ours:
        ours.setdefault("lm_head.weight", ours["wte.weight"])  # files leave the tied head out
    if why := weights_mismatch(ours, config, transposed=_CONV1D):
        c = config
        said = f"vocab_size={c.vocab_size}, n_positions={c.block_size}, n_embd={c.n_embd}, n_layer={c.n_layer}"
        raise HFError(
            f"{weights_file(folder)} does not fit {folder / 'config.json'} ({said}, n_head={c.n_head}): {why}; "
            "the two files come from different models, or one was damaged or edited"
        )


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The state dict in model.safetensors, else pytorch_model.bin (loaded without running code), once
    checked against config.json: every name and shape, and finite floating-point values."""
    file, config = weights_file(folder), model_config(folder)
    state = _read(file)
    check_weights(folder, config, {k: tuple(v.shape) for k, v in state.items()})
    if why := bad_values(state):
        raise HFError(f"{file}: {why}; these weights cannot be used, download or export the model again")
    return state


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


def load(
    source: str,
    *,
    block_size: int | None = None,
    dropout: float = 0.0,
    attn_impl: str = "manual",
    device: torch.device | str = "cpu",
) -> GPT:
    """A Hugging Face GPT-2 (hub name or folder) as minigpt's GPT, in eval mode."""
    folder = find(source)
    config = model_config(folder, block_size=block_size, dropout=dropout, attn_impl=attn_impl)
    model = GPT.empty(config)  # no time spent on a random init that the weights replace
    model.load_state_dict(from_hf_state(read_weights(folder), config), assign=True)  # every name and shape checked
    model.tie_head()
    return model.to(device).eval()


# -- out: a run -> an HF folder --------------------------------------------------------------------------


def hf_config(config: ModelConfig, tokenizer: Tokenizer | None = None) -> dict[str, Any]:
    """config.json for transformers' GPT2LMHeadModel; refuses what GPT-2's format cannot say."""
    refusals = {
        "model.attn_score='additive'": config.attn_score == "additive",
        f"model.attn_window={config.attn_window}": config.attn_window is not None,
        "model.tie_weights=false (an untied LM head)": not config.tie_weights,
        "model.bias=false": not config.bias,
        f"model.n_head * model.d_head = {config.attn_dim} != model.n_embd = {config.n_embd}": (
            config.attn_dim != config.n_embd
        ),
    }
    if switches := config.not_in_gpt2():  # "A CPU speedrun"'s switches, all named at once
        raise HFError(f"{', '.join(switches)}: GPT-2 has no equivalent; export needs a run trained without them")
    for setting in (s for s, refused in refusals.items() if refused):
        raise HFError(f"GPT-2's format cannot express {setting}; export a model trained without it")
    eot = tokenizer.eot_id if tokenizer is not None else None
    return {
        "model_type": "gpt2",
        "architectures": ["GPT2LMHeadModel"],
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": config.d_ff,
        "layer_norm_epsilon": 1e-5,
        "activation_function": "gelu_new" if config.activation == "gelu_tanh" else "gelu",
        "scale_attn_weights": config.attn_score == "scaled_dot",
        "tie_word_embeddings": True,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "bos_token_id": eot,
        "eos_token_id": eot,
    }


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
    too; bpe runs get their trained tokenizer.json, which AutoTokenizer loads as a PreTrainedTokenizerFast.
    Char runs get minigpt_tokenizer.json: the characters in id order (id i is chars[i]); transformers
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
        elif isinstance(tokenizer, BPETokenizer):
            (tmp / "tokenizer.json").write_text(tokenizer.to_json(), encoding="utf-8")
            special = {"bos_token": GPT2_EOT, "eos_token": GPT2_EOT, "unk_token": GPT2_EOT}
            tok_config = {
                "tokenizer_class": "PreTrainedTokenizerFast",  # the class that reads tokenizer.json alone
                "model_max_length": model.config.block_size,
                "add_bos_token": False,  # minigpt starts text as it is, as GPT-2 does
                **special,
            }
            (tmp / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
        elif isinstance(tokenizer, CharTokenizer):
            (tmp / "minigpt_tokenizer.json").write_text(
                json.dumps(tokenizer.to_dict(), indent=2) + "\n", encoding="utf-8"
            )
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def gpt2_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """GPT-2's vocab.json and merges.txt, rebuilt from the BPE ranks minigpt ships (tiktoken's format).

    Each multi-byte token's merge is the pair of tokens that BPE, using only lower ranks, leaves it as.
    """
    ranks = GPT2Tokenizer()._enc._mergeable_ranks  # token bytes -> rank
    spell = byte_symbols()

    def as_text(token: bytes) -> str:
        return "".join(spell[b] for b in token)

    implied = implied_merges(ranks)
    merges = [" ".join(map(as_text, implied[token])) for token in sorted(implied, key=ranks.__getitem__)]
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    vocab["<|endoftext|>"] = GPT2Tokenizer().eot_id
    return vocab, merges


# -- the export command ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def body() -> None:
        cfg = cli.parse(ExportConfig, argv, prog="python -m minigpt.hf")
        path, _ = find_checkpoint(cfg.ckpt, cfg.run)
        model, tokenizer, _ = load_model(path, "cpu")
        out = export(model, tokenizer, cfg.out or path.parent / "hf")
        print(f"wrote {out}: load it with transformers.AutoModelForCausalLM.from_pretrained({str(out)!r})")

    return entry.run(body)


if __name__ == "__main__":
    sys.exit(main())
