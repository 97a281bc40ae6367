"""Fixtures shared by several test modules; pytest finds this file by itself, so tests take them as parameters."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The first 40,000 characters of the shipped Shakespeare, enough for a tiny model's few steps."""
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text((ROOT / "data/shakespeare/input.txt").read_text()[:40_000])
    return path
