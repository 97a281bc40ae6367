"""Tokenize a corpus into data/cache/ once, ahead of training (train.py also does this on its own).

    python data/prepare.py                                        # tiny Shakespeare, char tokenizer
    python data/prepare.py --data.tokenizer gpt2 --data.path my_notes/   # a folder of .txt files, GPT-2 BPE
    python data/prepare.py --data.path src/ --data.glob '**/*.py'  # a folder of Python sources
    python data/prepare.py configs/baby-gpt.toml                  # the [data] table of a run's config

The work happens in minigpt/prepare_cli.py, which the installed command runs as `minigpt prepare`.
"""

import sys

from minigpt.prepare_cli import main

if __name__ == "__main__":
    sys.exit(main())
