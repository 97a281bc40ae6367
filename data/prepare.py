"""Tokenize a corpus into data/cache/ once, ahead of training (train.py also does this on its own).

    python data/prepare.py                                   # tiny Shakespeare, char tokenizer
    python data/prepare.py --tokenizer gpt2 --path my_notes/ # a folder of .txt files, GPT-2 BPE
    python data/prepare.py --hf_dataset roneneldan/TinyStories --hf_split validation --tokenizer gpt2

Flags are the fields of minigpt.data.DataConfig.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

# Let `python data/prepare.py` work from a fresh clone without `pip install -e .`.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minigpt.data import DataConfig, prepare  # noqa: E402


def parse_args(argv: list[str] | None = None) -> tuple[DataConfig, bool]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in dataclasses.fields(DataConfig):
        kind = float if f.type == "float" else str
        parser.add_argument(f"--{f.name}", f"--data.{f.name}", dest=f.name, type=kind, default=f.default,
                            help=f"(default: {f.default})")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = vars(parser.parse_args(argv))
    quiet = args.pop("quiet")
    return DataConfig(**args), quiet


def main(argv: list[str] | None = None) -> int:
    try:
        cfg, quiet = parse_args(argv)
        start = time.perf_counter()
        data = prepare(cfg, progress=not quiet)
    except ValueError as e:  # DataError and config errors: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1
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
