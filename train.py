"""Train a GPT: `python train.py [CONFIG.toml] [--section.key=value ...] [--resume [RUN_DIR]]`.

Run `python train.py --help` for every setting. The work happens in minigpt/run.py.
"""

import sys

from minigpt.run import main

if __name__ == "__main__":
    sys.exit(main())
