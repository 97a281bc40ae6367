"""The files minigpt ships, found from any folder: tiny Shakespeare, the induction corpus and configs/*.toml.

Their repository paths (data/shakespeare/input.txt, configs/baby-gpt.toml) are the defaults and what the docs
show. Outside the repository such a path does not exist in the current folder; it then means the copy that
ships with the package. pyproject.toml maps those folders into the wheel as minigpt/shipped/<the same path>,
so git keeps one copy of each file; an editable install (or a checkout) finds them in the repository itself.
A path that exists in the current folder always wins, so a user's own configs/ or data/ come first.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED = ("configs", "data/shakespeare", "data/induction")
"""The folders that ship; pyproject.toml's [tool.setuptools.package-dir] lists the same ones."""

_PACKAGE = Path(__file__).resolve().parent
_ROOTS = (_PACKAGE / "shipped", _PACKAGE.parent)  # inside an installed wheel; the repository (checkout, editable)


def _is_shipped(path: Path) -> bool:
    return not path.is_absolute() and any(path.as_posix().startswith(folder + "/") for folder in SHIPPED)


def path(name: str | Path) -> Path:
    """The shipped file itself, e.g. path("configs/baby-gpt.toml"), whatever the current folder holds."""
    for root in _ROOTS:
        if (root / name).is_file():
            return root / name
    return _ROOTS[-1] / name  # an incomplete install: reading it fails with this path in the message


def is_copy(name: str | Path) -> bool:
    """Whether name is a shipped file found by find() outside the current folder (a run's header says so)."""
    given = Path(name)
    return given.is_absolute() and any(given.is_relative_to(root / f) for root in _ROOTS for f in SHIPPED)


def find(name: str | Path) -> Path:
    """name as given if it exists here (or is not one of the shipped files), else the shipped copy."""
    given = Path(name)
    if given.exists() or not _is_shipped(given):
        return given
    for root in _ROOTS:
        if (root / given).exists():
            return root / given
    return given  # the caller's own error names the missing path
