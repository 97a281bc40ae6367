"""Tokenize a corpus into data/cache/ once, ahead of training (train.py also does this on its own).

    python data/prepare.py                                   # tiny Shakespeare, char tokenizer
    python data/prepare.py --tokenizer gpt2 --path my_notes/ # a folder of .txt files, GPT-2 BPE
    python data/prepare.py --hf_dataset roneneldan/TinyStories --hf_split validation --tokenizer gpt2

Flags are the fields of minigpt.data.DataConfig.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

# Let `python data/prepare.py` work from a fresh clone without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minigpt.config import ConfigError, format_help, load_config, split_argv  # noqa: E402
from minigpt.data import DataConfig, prepare  # noqa: E402


def parse_args(argv: list[str]) -> tuple[DataConfig, bool]:
    """--FIELD=VALUE (or --data.FIELD) for each DataConfig field, parsed like train.py's settings."""
    quiet = "--quiet" in argv
    names = {f.name for f in dataclasses.fields(DataConfig)}
    argv = [f"--data.{a[2:]}" if a.startswith("--") and a[2:].split("=")[0] in names else a
            for a in argv if a != "--quiet"]  # fmt: skip
    path, overrides, rest = split_argv(argv)
    if rest or path:
        raise ConfigError(f"unknown argument {(rest or [path])[0]!r}; see python data/prepare.py --help")
    return load_config({"data": DataConfig}, None, overrides)["data"], quiet


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(__doc__ + "\n" + format_help({"data": DataConfig}, prog="python data/prepare.py")
              + "  --quiet\n      No progress bars.")  # fmt: skip
        return 0
    try:
        cfg, quiet = parse_args(argv)
        start = time.perf_counter()
        data = prepare(cfg, progress=not quiet)
    except ValueError as e:  # DataError and config errors: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = data.meta
    action = "reused" if data.reused else "wrote"
    print(f"{action} {data.dir} in {time.perf_counter() - start:.2f}s")
    print(f"  tokenizer {meta['tokenizer']['kind']}, vocab_size {meta['vocab_size']}, dtype {meta['dtype']}")
    for split in ("train", "val"):
        path = data.dir / f"{split}.bin"
        print(f"  {path}: {meta[f'{split}_tokens']:,} tokens ({meta[f'{split}_chars']:,} characters)")
    print(f"  {data.dir / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
