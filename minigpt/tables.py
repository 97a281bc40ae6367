"""Numbers and tables as text, for the tools that print them (params, bench, train's header)."""

from __future__ import annotations

from collections.abc import Sequence


def human(n: float, unit: str = "") -> str:
    """124_439_808 -> '124.44M', 45.25 -> '45.25'; with unit='B', bytes in binary units (GiB)."""
    if unit == "B":
        steps, sep, last = (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)), " ", f"{n:.0f} B"
    else:
        steps, sep, last = (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)), "", f"{n:.4g}"
    for suffix, size in steps:
        if abs(n) >= size:
            return f"{n / size:.2f}{sep}{suffix}"
    return last


def text_table(rows: Sequence[Sequence[str]], align: str = "", markdown: bool = False) -> str:
    """rows[0] is the header. align: 'l' or 'r' per column (default: first left, rest right)."""
    if markdown:
        lines = ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines[:1] + ["|" + "---|" * len(rows[0])] + lines[1:])
    align = align or "l" + "r" * (len(rows[0]) - 1)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align)).rstrip()
        for r in rows
    ]
    return "\n".join(lines[:1] + ["  ".join("-" * w for w in widths)] + lines[1:])
