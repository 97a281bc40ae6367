"""The README's guided tour quotes lines of code with their places; keep them true."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quoted_code_lines_are_where_the_readme_says():
    readme = (ROOT / "README.md").read_text()
    refs = re.findall(r"`([^`]+)` \[(minigpt/[\w/]+\.py):(\d+)\]", readme)
    assert len(refs) >= 10
    for code, path, line in refs:
        lines = (ROOT / path).read_text().splitlines()
        assert code.strip() in lines[int(line) - 1], f"{path}:{line} no longer holds {code!r}"


def test_readme_opens_with_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert "python train.py" in blocks[0] and "pip install torch==2.13.0" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (ROOT / ".ci/run").read_text()
    assert "python -m pytest -q" in blocks[1] and "python -m pytest -q" in ci
