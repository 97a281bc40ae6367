"""Parameter, FLOP and memory accounting from a ModelConfig alone (nothing is allocated). Its command line,
minigpt/params_cli.py, reads the config (and a real GPT-2's files):

    python -m minigpt.params --model.preset gpt3-175b [--batch_size 8]   # or configs/gpt2.toml, or --model.* flags
    python -m minigpt.params                                             # no model: the presets against published sizes
"""

from __future__ import annotations

import runpy

from minigpt.config import ModelConfig, load_presets
from minigpt.tables import human, text_table

TRAIN_ONLY_TABLES = ("data", "train", "log")  # of a run's config file; params and bench read its [model]
_LAYER_ROWS = {
    "layer.attn_q": "attention Q",
    "layer.attn_k": "attention K",
    "layer.attn_v": "attention V",
    "layer.attn_out": "attention output",
    "layer.attn_score": "attention additive score",
    "layer.qk_norm": "QK-norm gains",
    "layer.mlp_fc": "MLP up",
    "layer.mlp_proj": "MLP down",
    "layer.ln_1": "LayerNorm 1",
    "layer.ln_2": "LayerNorm 2",
}


def count_params(config: ModelConfig) -> dict[str, int]:
    """Parameter counts by component. Keys prefixed `layer.` are for ONE block, `head.` for ONE head.

    "non_embedding" is the N of Kaplan et al. (2020). "head.weights" (its d_head columns of W_Q, W_K,
    W_V and rows of W_O) is the count the GPT-3 arithmetic checks; "head.biases" is its Q, K, V biases.
    Value embeddings (model.value_embeds) are lookups, not matmuls: they count as embedding, outside N.
    """
    d, a, f, v = config.n_embd, config.attn_dim, config.ff_dim, config.vocab_size
    hs, nh, b = config.head_size, config.n_head, int(config.bias)
    c: dict[str, int] = {"token_embedding": v * d}
    c["position_embedding"] = config.block_size * d if config.pos_emb == "learned" else 0  # rotary: no table
    c["value_embedding"] = config.n_layer * v * a if config.value_embeds else 0  # a v x a table per layer
    # one block: Q, K, V are d -> n_head*d_head each, the output projection maps back
    c["layer.attn_q"] = c["layer.attn_k"] = c["layer.attn_v"] = d * a + b * a
    c["layer.attn_out"] = a * d + b * d
    c["layer.attn_score"] = nh * (2 * hs * hs + hs) if config.attn_score == "additive" else 0
    c["layer.qk_norm"] = 2 * a if config.qk_norm else 0  # a gain per head and dimension, for q and for k
    c["layer.mlp_fc"] = d * f + b * f
    c["layer.mlp_proj"] = f * d + b * d
    c["layer.ln_1"] = c["layer.ln_2"] = d + b * d
    c["layer.total"] = sum(n for k, n in c.items() if k.startswith("layer."))
    c["layer.biases"] = b * (3 * a + d + f + d + d + d)  # included above: Linear + LayerNorm biases
    c["layers"] = config.n_layer * c["layer.total"]
    c["ln_f"] = d + b * d
    c["lm_head"] = 0 if config.tie_weights else v * d
    c["embedding"] = c["token_embedding"] + c["position_embedding"] + c["value_embedding"] + c["lm_head"]
    c["total"] = c["embedding"] + c["layers"] + c["ln_f"]
    c["non_embedding"] = c["total"] - c["embedding"]
    c["head.weights"] = 3 * d * hs + hs * d + (c["layer.attn_score"] + c["layer.qk_norm"]) // nh
    c["head.biases"] = 3 * b * hs
    return c


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token: 6N + 12 * n_layer * attn_dim * T (PaLM, Chowdhery et al. 2022, App. B).

    N: the weights in matmuls, all blocks plus the V x d LM head (a matmul even when tied). The second
    term is q.k^T and weights.v over the full context T (the causal mask's skipped half is counted).
    """
    t = seq_len or config.block_size
    n_matmul = count_params(config)["non_embedding"] + config.vocab_size * config.n_embd
    dense, attention = 6 * n_matmul, 12 * config.n_layer * config.attn_dim * t
    return {"params_in_matmuls": n_matmul, "dense": dense, "attention": attention, "total": dense + attention}


def training_memory(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, dict[str, int]]:
    """Bytes needed to train with AdamW, for fp32 and for bf16 mixed precision.

    State is exact: 16 B per parameter in both (bf16 autocast keeps fp32 master weights). Activations are
    an order of magnitude: per layer T*B*(34*d + 5*n_head*T) bytes in bf16 (Korthikanti et al. 2022),
    doubled for fp32, plus fp32 logits and their gradient.
    """
    t = seq_len or config.block_size
    p = count_params(config)["total"]
    acts16 = config.n_layer * t * batch_size * (34 * config.n_embd + 5 * config.n_head * t)
    logits = 2 * 4 * batch_size * t * config.vocab_size
    rows = {
        name: {"weights": 4 * p, "gradients": 4 * p, "adamw": 8 * p, "activations": act + logits}
        for name, act in (("fp32", 2 * acts16), ("bf16-mixed", acts16))
    }
    return {name: row | {"total": sum(row.values())} for name, row in rows.items()}


def format_param_table(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> str:
    """The breakdown as an aligned text table with notes (train.py prints it at start)."""
    c, L = count_params(config), config.n_layer
    parts = [("token embedding (wte)", c["token_embedding"])]
    parts += [("position embedding (wpe)", c["position_embedding"])] if config.pos_emb == "learned" else []
    parts += [(f"value embeddings x {L} layers", c["value_embedding"])] if c["value_embedding"] else []
    parts += [(f"  {label} x {L} layers", L * c[key]) for key, label in _LAYER_ROWS.items() if c[key]]
    parts += [
        (f"  (of which biases) x {L}", L * c["layer.biases"]),
        (f"blocks total ({human(c['layer.total'])} each)", c["layers"]),
        ("final LayerNorm (ln_f)", c["ln_f"]),
        ("LM head" + (" (tied to wte)" if config.tie_weights else ""), c["lm_head"]),
        *((key.replace("_", "-"), c[key]) for key in ("embedding", "non_embedding", "total")),
    ]
    rows = [("component", "params", "exact", "share")]
    rows += [(label, human(n), f"{n:,}", f"{100 * n / c['total']:.2f}%") for label, n in parts]

    d, hs, nh = config.n_embd, config.head_size, config.n_head
    score = f" + {c['layer.attn_score'] // nh:,} additive-score weights" if c["layer.attn_score"] else ""
    score += f" + {c['layer.qk_norm'] // nh:,} QK-norm gains" if c["layer.qk_norm"] else ""
    flops, mem = flops_per_token(config, seq_len), training_memory(config, batch_size, seq_len)
    fp32 = mem["fp32"]
    notes = [
        f"shape: {L} layers, d_model {d}, {nh} heads x d_head {hs} = {config.attn_dim}, "
        f"d_ff {config.ff_dim}, context {config.block_size}, vocab {config.vocab_size}",
        f"one head owns {c['head.weights']:,} weights = 3 x {d:,} x {hs:,} (its Q, K, V columns) "
        f"+ {hs:,} x {d:,} (its output rows){score}",
        f"  and {c['head.biases']:,} biases (its Q, K, V entries; the output bias is shared by all heads)",
        f"training FLOPs/token at T={seq_len or config.block_size}: {human(flops['total'])} "
        f"= 6N {human(flops['dense'])} + attention 12*L*d_attn*T {human(flops['attention'])}",
        f"training memory (AdamW, batch {batch_size}): fp32 {human(fp32['total'], 'B')} "
        f"(state {human(fp32['weights'] + fp32['gradients'] + fp32['adamw'], 'B')}), "
        f"bf16 mixed {human(mem['bf16-mixed']['total'], 'B')} (activations estimated)",
    ]
    return text_table(rows, "lrrr") + "\n" + "\n".join(notes)


def format_preset_table() -> str:
    """Every preset's shape and total next to its published parameter count."""
    rows = [("preset", "n_layer", "d_model", "n_heads", "d_head", "minigpt", "published", "diff")]
    for name, entry in load_presets().items():
        cfg = ModelConfig.from_preset(name)
        total, pub = count_params(cfg)["total"], entry["published_params"]
        shape = (cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.head_size)
        diff = f"{100 * (total - pub) / pub:+.1f}%" if pub else ""
        rows.append((name, *map(str, shape), human(total), human(pub) if pub else "-", diff))
    return text_table(rows)


if __name__ == "__main__":
    # `python -m minigpt.params` runs the command line, minigpt/params_cli.py, as a script of its own: the
    # accounting above never imports it
    runpy.run_module("minigpt.params_cli", run_name="__main__", alter_sys=True)
