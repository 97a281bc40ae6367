"""Write data/induction/input.txt: tiny Shakespeare with short spans copied right after themselves.

    python data/induction/make.py            # seeded: the same file every time (about 1.5 MB)

Walking through data/shakespeare/input.txt, the script copies `gap` characters of text, then a span of
`span` characters twice in a row, and repeats (gap uniform in GAP, span uniform in SPAN). Every 64-character
window of the result holds a span and (most of) its copy at an offset that varies, so predicting the copy
rewards a head that finds the earlier occurrence of the current character and reads what came next:
an induction head. Plain Shakespeare barely rewards one in the few minutes configs/induction.toml trains
(docs/attention.md, "Head roles"). The natural text between the copies makes a previous-token head worth
having first, which an induction head is built on.
"""

import random
from pathlib import Path

SEED = 1337
SPAN = (16, 32)  # length of each copied span, in characters
GAP = (0, 24)  # plain text between one copy and the next span
MAX_CHARS = 1_500_000

here = Path(__file__).resolve().parent


def make(text: str, rng: random.Random) -> str:
    pieces, pos, size = [], 0, 0
    while pos < len(text) and size < MAX_CHARS:
        gap, span = rng.randint(*GAP), rng.randint(*SPAN)
        plain, copied = text[pos : pos + gap], text[pos + gap : pos + gap + span]
        pieces += [plain, copied, copied]
        pos, size = pos + gap + span, size + len(plain) + 2 * len(copied)
    return "".join(pieces)


def main() -> None:
    text = (here.parent / "shakespeare" / "input.txt").read_text(encoding="utf-8")
    out = make(text, random.Random(SEED))
    (here / "input.txt").write_text(out, encoding="utf-8")
    print(f"wrote {here / 'input.txt'}: {len(out):,} characters from {len(text):,} of Shakespeare")


if __name__ == "__main__":
    main()
