"""Train a GPT: `python train.py [CONFIG.toml] [--section.key=value ...] [--resume [RUN_DIR]]`.

Run `python train.py --help` for every setting. The work happens in minigpt/run.py.
"""

import sys

from minigpt.commands import prepare_threads_env

prepare_threads_env("train")  # before torch is imported: it reads these settings once, as it starts
from minigpt.run import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
