"""Parameter, FLOP and memory accounting from a ModelConfig alone (nothing is allocated).

    python -m minigpt.params --preset gpt3-175b
    python -m minigpt.params --config configs/gpt2.toml

Every parameter of minigpt.model.GPT is accounted for; tests check the total against
sum(p.numel() for p in model.parameters()) for built models.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from minigpt.model import ModelConfig, load_presets


def count_params(config: ModelConfig) -> dict[str, int]:
    """Parameter counts by component. Keys prefixed `layer.` are for ONE block.

    "embedding" is the token and position embeddings plus the LM head when untied (the
    unembedding); "non_embedding" is the rest, the N of Kaplan et al. (2020).
    "attention_per_head" is what one head owns: its d_head columns of the Q, K and V
    weights and biases, its d_head rows of the output projection (the output bias is
    shared by all heads and not included), and its additive-score network if any.
    """
    d, a, f, v = config.n_embd, config.attn_dim, config.ff_dim, config.vocab_size
    hs, nh = config.head_size, config.n_head
    b = 1 if config.bias else 0

    c: dict[str, int] = {}
    c["token_embedding"] = v * d
    c["position_embedding"] = config.block_size * d
    # one block: Q, K, V are d -> n_head*d_head each, the output projection maps back
    c["layer.attn_q"] = d * a + b * a
    c["layer.attn_k"] = d * a + b * a
    c["layer.attn_v"] = d * a + b * a
    c["layer.attn_out"] = a * d + b * d
    c["layer.attn_score"] = nh * (2 * hs * hs + hs) if config.attn_score == "additive" else 0
    c["layer.mlp_fc"] = d * f + b * f
    c["layer.mlp_proj"] = f * d + b * d
    c["layer.ln_1"] = d + b * d
    c["layer.ln_2"] = d + b * d
    c["layer.total"] = sum(n for k, n in c.items() if k.startswith("layer."))
    c["layer.biases"] = b * (3 * a + d + f + d + d + d)  # included above: Linear + LayerNorm biases
    c["layers"] = config.n_layer * c["layer.total"]
    c["ln_f"] = d + b * d
    c["lm_head"] = 0 if config.tie_weights else v * d
    c["embedding"] = c["token_embedding"] + c["position_embedding"] + c["lm_head"]
    c["total"] = c["embedding"] + c["layers"] + c["ln_f"]
    c["non_embedding"] = c["total"] - c["embedding"]
    c["attention_per_head"] = 3 * (d * hs + b * hs) + hs * d + c["layer.attn_score"] // nh
    return c


def flops_per_token(config: ModelConfig, seq_len: int | None = None) -> dict[str, int]:
    """Training FLOPs per token: 6 * N + 12 * n_layer * attn_dim * T.

    N counts the weights that take part in a matmul: every block's weights plus the
    LM head's V x d matrix (a matmul even when tied). Each weight costs 2 FLOPs per
    token forward (multiply + add) and 4 backward, hence 6N. Attention adds, per layer
    and token, 2*T*attn_dim for q.k^T and 2*T*attn_dim for weights.v forward, times 3
    for training: 12 * n_layer * attn_dim * T (PaLM, Chowdhery et al. 2022, App. B;
    T is the full context, the causal mask's skipped half is not subtracted).
    """
    t = seq_len if seq_len is not None else config.block_size
    counts = count_params(config)
    n_matmul = counts["non_embedding"] + config.vocab_size * config.n_embd
    dense = 6 * n_matmul
    attention = 12 * config.n_layer * config.attn_dim * t
    return {"params_in_matmuls": n_matmul, "dense": dense, "attention": attention, "total": dense + attention}


def training_memory(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> dict[str, dict[str, int]]:
    """Bytes needed to train with AdamW, for fp32 and for bf16 mixed precision.

    Model state is exact: fp32 keeps weights (4 B), gradients (4 B) and AdamW's two
    moments (8 B) per parameter. bf16 mixed (torch.autocast) keeps the same fp32
    master state and runs matmuls in bf16, so it saves activation memory, not state.
    Activations are an estimate after Korthikanti et al. (2022), per layer
    T*B*(34*d + 5*n_head*T) bytes with 2-byte activations (doubled for fp32), plus the
    logits and their gradient (fp32). Treat them as an order of magnitude.
    """
    t = seq_len if seq_len is not None else config.block_size
    p = count_params(config)["total"]
    state = {"weights": 4 * p, "gradients": 4 * p, "adamw": 8 * p}
    acts16 = config.n_layer * t * batch_size * (34 * config.n_embd + 5 * config.n_head * t)
    logits = 2 * 4 * batch_size * t * config.vocab_size
    out = {}
    for name, act in (("fp32", 2 * acts16), ("bf16-mixed", acts16)):
        row = {**state, "activations": act + logits}
        row["total"] = sum(row.values())
        out[name] = row
    return out


def human(n: float, unit: str = "") -> str:
    """124_439_808 -> '124.44M'; with unit='B' bytes in binary units (GiB)."""
    if unit == "B":
        for suffix, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
            if abs(n) >= size:
                return f"{n / size:.2f} {suffix}"
        return f"{n:.0f} B"
    for suffix, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{suffix}"
    return f"{n:.0f}"


def _table(rows: list[tuple[str, ...]], align: str) -> str:
    """Aligned text table; align is one char per column, 'l' or 'r'."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_param_table(config: ModelConfig, batch_size: int = 1, seq_len: int | None = None) -> str:
    """The breakdown as an aligned text table (printed by train.py at start)."""
    c = count_params(config)
    total = c["total"]
    L = config.n_layer
    rows = [("component", "params", "exact", "share")]

    def row(label: str, n: int) -> None:
        rows.append((label, human(n), f"{n:,}", f"{100 * n / total:.2f}%"))

    row("token embedding (wte)", c["token_embedding"])
    row("position embedding (wpe)", c["position_embedding"])
    for key, label in (
        ("attn_q", "attention Q"),
        ("attn_k", "attention K"),
        ("attn_v", "attention V"),
        ("attn_out", "attention output"),
        ("attn_score", "attention additive score"),
        ("mlp_fc", "MLP up"),
        ("mlp_proj", "MLP down"),
        ("ln_1", "LayerNorm 1"),
        ("ln_2", "LayerNorm 2"),
    ):
        if c[f"layer.{key}"]:
            row(f"  {label} x {L} layers", L * c[f"layer.{key}"])
    row(f"  (of which biases) x {L}", L * c["layer.biases"])
    row(f"blocks total ({human(c['layer.total'])} each)", c["layers"])
    row("final LayerNorm (ln_f)", c["ln_f"])
    row("LM head" + (" (tied to wte)" if config.tie_weights else ""), c["lm_head"])
    row("embedding", c["embedding"])
    row("non-embedding", c["non_embedding"])
    row("total", total)
    table = _table(rows, "lrrr")

    hs, nh = config.head_size, config.n_head
    flops = flops_per_token(config, seq_len)
    mem = training_memory(config, batch_size, seq_len)
    t = seq_len or config.block_size
    notes = [
        f"shape: {L} layers, d_model {config.n_embd}, {nh} heads x d_head {hs} = {config.attn_dim}, "
        f"d_ff {config.ff_dim}, context {config.block_size}, vocab {config.vocab_size}",
        f"one head owns {c['attention_per_head']:,} params (Q, K, V columns + output rows)",
        f"training FLOPs/token at T={t}: {human(flops['total'])} "
        f"= 6N {human(flops['dense'])} + attention 12*L*d_attn*T {human(flops['attention'])}",
        "training memory (AdamW, batch {}): fp32 {} (state {}), bf16 mixed {} (activations estimated)".format(
            batch_size,
            human(mem["fp32"]["total"], "B"),
            human(mem["fp32"]["weights"] + mem["fp32"]["gradients"] + mem["fp32"]["adamw"], "B"),
            human(mem["bf16-mixed"]["total"], "B"),
        ),
    ]
    return table + "\n" + "\n".join(notes)


def format_preset_table() -> str:
    """Every preset's shape and total next to its published parameter count."""
    rows = [("preset", "n_layer", "d_model", "n_heads", "d_head", "minigpt", "published", "diff")]
    for name, entry in load_presets().items():
        cfg = ModelConfig(**entry["model"])
        total = count_params(cfg)["total"]
        pub = entry["published_params"]
        diff = f"{100 * (total - pub) / pub:+.1f}%" if pub else ""
        rows.append(
            (
                name,
                str(cfg.n_layer),
                str(cfg.n_embd),
                str(cfg.n_head),
                str(cfg.head_size),
                human(total),
                human(pub) if pub else "-",
                diff,
            )
        )
    return _table(rows, "lrrrrrrr")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m minigpt.params",
        description="Count a model's parameters, training FLOPs and memory from its config.",
    )
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--preset", help=f"a named size: {', '.join(load_presets())}")
    src.add_argument("--config", type=Path, help="a TOML or JSON config file with a [model] section")
    parser.add_argument("--batch-size", type=int, default=1, help="batch size for the memory estimate")
    parser.add_argument("--seq-len", type=int, default=None, help="sequence length (default: block_size)")
    args = parser.parse_args(argv)
    try:
        if args.config is not None:
            from minigpt.config import load_config
            from minigpt.run import SECTIONS  # a config file may hold every section of a run

            config = load_config(SECTIONS, args.config)["model"]
            title = str(args.config)
        else:
            name = args.preset or "gpt3-175b"
            config = ModelConfig.from_preset(name)
            title = f"preset {name}"
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"Parameters of {title}\n")
    print(format_param_table(config, args.batch_size, args.seq_len))
    print("\nPresets against published sizes (GPT-3: Brown et al. 2020, Table 2.1)\n")
    print(format_preset_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
