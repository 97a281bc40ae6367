"""data/prepare.py's job (and `minigpt prepare`'s): tokenize a corpus into data/cache/ once, ahead of training.

    python data/prepare.py                                        # tiny Shakespeare, char tokenizer
    python data/prepare.py --data.tokenizer gpt2 --data.path my_notes/   # a folder of .txt files, GPT-2 BPE
    python data/prepare.py --data.path src/ --data.glob '**/*.py'  # a folder of Python sources
    python data/prepare.py configs/baby-gpt.toml                  # the [data] table of a run's config
"""

import dataclasses
import sys
import time

from minigpt import cli, entry, shipped
from minigpt.config import PrepareConfig
from minigpt.data import prepare


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv

    def body() -> None:
        cfg = cli.parse(PrepareConfig, argv, prog="python data/prepare.py", ignore=("model", "train", "log"))
        # outside the repository the default corpus is the copy that ships with minigpt (minigpt/shipped.py)
        data_cfg = dataclasses.replace(cfg.data, path=str(shipped.find(cfg.data.path)))
        start = time.perf_counter()
        data = prepare(data_cfg, progress=not cfg.quiet)
        meta = data.meta
        print(f"{'reused' if data.reused else 'wrote'} {data.dir} in {time.perf_counter() - start:.2f}s")
        if note := data.skipped_note():
            print(f"  {note}")
        print(f"  tokenizer {meta['tokenizer']['kind']}, vocab_size {meta['vocab_size']}, dtype {meta['dtype']}")
        for split in ("train", "val"):
            tokens, chars = meta[f"{split}_tokens"], meta[f"{split}_chars"]
            print(f"  {data.dir / f'{split}.bin'}: {tokens:,} tokens ({chars:,} characters)")
        print(f"  {data.dir / 'meta.json'}", flush=True)  # flushed here, so a reader that left is caught by entry.run

    # prepare() removed its unfinished files on Ctrl-C; earlier complete ones are untouched
    stopped = "interrupted: no unfinished token files were kept; run the same command again to start over"
    return entry.run(body, interrupted=stopped)
