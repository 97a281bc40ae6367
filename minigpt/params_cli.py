"""`python -m minigpt.params` (and `minigpt params`): a model's parameters, FLOPs and memory from its config.

    python -m minigpt.params --model.preset gpt3-175b [--batch_size 8]   # or configs/gpt2.toml, or --model.* flags
    python -m minigpt.params --model.init_from gpt2                      # a real GPT-2, checked against its weights
    python -m minigpt.params                                             # no model: the presets against published sizes

The accounting is minigpt/params.py, which knows nothing of files or of Hugging Face; this module reads
the config, and GPT-2's own config.json and weights file when asked for one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from minigpt import cli, entry
from minigpt.config import DataConfig, ModelConfig, ParamsConfig
from minigpt.params import TRAIN_ONLY_TABLES, count_params, format_param_table, format_preset_table

PROG = "python -m minigpt.params"
PRESETS = "Presets against published sizes (GPT-3: Brown et al. 2020, Table 2.1)"
NO_MODEL = "no model given: pick one with --model.preset NAME (a preset above), a CONFIG.toml, or --model.* flags"


def report(cfg: ParamsConfig) -> str:
    """The model's table (with GPT-2's stored count when it is a real GPT-2), then the presets'."""
    model, lines = cfg.model, []
    if model.init_from:  # a real GPT-2: its config.json gives the shape, its weights file the stored count
        from minigpt import hf  # only here: hf loads torch, which counting alone does not need

        model = hf.with_shape(model, crop=False)
        stored = hf.stored_params(hf.find(model.init_from))
        verdict = "equal" if stored == count_params(model)["total"] else "NOT equal"
        lines.append(
            f"{model.init_from}: {stored:,} parameters stored in its weights file, {verdict} to the count below\n"
        )
    custom = "the default ModelConfig" if model == ModelConfig() else "a custom model"
    name = model.init_from or model.preset or custom
    if model.preset and count_params(model) != count_params(ModelConfig.from_preset(model.preset)):
        name += ", resized"
    lines.append(f"Parameters of {name}\n\n{format_param_table(model, cfg.batch_size, cfg.seq_len)}")
    lines.append(f"\n{PRESETS}\n\n{format_preset_table()}")
    return "\n".join(lines)


def vocabulary_base(argv: Sequence[str]) -> dict[str, Any] | None:
    """The vocabulary a CONFIG file trains with, when its [data] picks gpt2 or bpe and its [model] leaves
    vocab_size to training (which sets it from the tokenizer): so the embedding's share is the run's.
    A run's own config.toml states model.vocab_size, which wins over this."""
    file = cli.config_file(ParamsConfig, argv)
    data = cli.read_file(file).get("data", {}) if file is not None else {}
    tokenizer = data.get("tokenizer") if isinstance(data, dict) else None
    vocab = {"gpt2": 50257, "bpe": data.get("vocab_size", DataConfig.vocab_size)}.get(tokenizer)
    return None if vocab is None else {"model": {"vocab_size": vocab}}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def body() -> None:
        if not argv:  # no model given: rather than a silent default size, the sizes there are to choose from
            print(f"{PRESETS}\n\n{format_preset_table()}\n\n{NO_MODEL}")
            return
        # everything is computed before the first line is printed: an error leaves stdout empty
        base = vocabulary_base(argv)
        text = report(cli.parse(ParamsConfig, argv, prog=PROG, base=base, ignore=TRAIN_ONLY_TABLES))
        print(text, flush=True)

    return entry.run(body)


if __name__ == "__main__":
    sys.exit(main())
