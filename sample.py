"""Sample from a trained GPT: `python sample.py [--run DIR | --ckpt PATH] [--prompt TEXT] [...]`.

With no arguments it continues a newline from the newest run's best checkpoint under runs/.
`python sample.py --attention --prompt "some text"` logs the model's attention maps on that text
instead. `python sample.py --help` lists every setting; the work happens in minigpt/sample_cli.py.
"""

import sys

from minigpt.sample_cli import main

if __name__ == "__main__":
    sys.exit(main())
