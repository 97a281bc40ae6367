"""The README is the front door; keep its promises true.

Code quotes are written as `code` [path/to/file.py, `Function` or `Class.method`] (or just
[path/to/file.py]): the quoted code must appear in that file, inside that function or class.
Nothing is pinned to line numbers, so edits that move code around do not break the check.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

QUOTE = re.compile(r"`([^`\n]+)` \[([\w./-]+\.py)(?:, `([\w.]+)`)?\]")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _squash(text: str) -> str:
    """Whitespace runs as one space, so re-wrapping or re-indenting code keeps a quote valid."""
    return " ".join(text.split())


def definition_source(path: Path, name: str) -> str | None:
    """Source of the function or class `name` ("f", "Class" or "Class.method") in path, or None."""
    source = path.read_text(encoding="utf-8")
    nodes: list[ast.AST] = [ast.parse(source)]
    for part in name.split("."):
        scope = [child for node in nodes for child in ast.iter_child_nodes(node)]
        nodes = [
            n for n in scope
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == part
        ]  # fmt: skip
        if not nodes:
            return None
    return ast.get_source_segment(source, nodes[0])


def quotes(path: Path) -> list[tuple[str, str, str | None]]:
    return QUOTE.findall(path.read_text(encoding="utf-8"))


def test_readme_opens_with_the_two_commands():
    readme = README.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    assert "pip install torch==2.13.0" in blocks[0] and "python train.py" in blocks[0]
    assert "pip install -e ." in blocks[0]
    assert "pip install torch==2.13.0" in blocks[1] and "pip install -e '.[dev]'" in blocks[1]
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert "python -m pytest -q" in blocks[1] and "python -m pytest -q" in ci


def test_readme_is_a_front_door_not_a_book():
    n = len(README.read_text(encoding="utf-8"))
    # 15,000 until the third wave, whose modules (the Attention tab, the installed command, one exit contract)
    # each earned a line in the map
    assert n <= 15_500, f"README.md has {n:,} characters; move depth into docs/ to stay within 15,500"


def test_readme_walks_from_the_math_to_the_code():
    found = quotes(README)
    assert len(found) >= 8, f"the math-to-code table quotes only {len(found)} lines; it needs at least 8"
    named = {(path, name) for _, path, name in found}
    assert ("minigpt/attention.py", "masked_softmax") in named  # -inf and softmax
    assert ("minigpt/attention.py", "causal_mask") in named


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_quoted_code_is_where_the_text_says(doc):
    places = re.findall(r"\[[\w./-]+\.py(?:, `[\w.]+`)?\]", doc.read_text(encoding="utf-8"))
    assert len(places) == len(quotes(doc)), f"{doc.name}: a [file.py] reference lacks its `code` on the same line"
    for code, rel, name in quotes(doc):
        path = ROOT / rel
        assert path.is_file(), f"{doc.name} quotes {rel}, which does not exist"
        where = path.read_text(encoding="utf-8")
        if name:
            where = definition_source(path, name)
            assert where is not None, f"{doc.name}: {rel} has no function or class {name!r}"
        assert _squash(code) in _squash(where), (
            f"{doc.name}: {rel}{f' ({name})' if name else ''} no longer holds {code!r}; update the quote"
        )


def test_readme_links_its_docs():
    linked = set(re.findall(r"\]\((docs/[\w-]+\.md)", README.read_text(encoding="utf-8")))
    assert {"docs/attention.md", "docs/training.md", "docs/sampling.md", "docs/configs.md"} <= linked
    assert "docs/benchmarks.md" in linked


@pytest.mark.parametrize("doc", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    text = re.sub(r"```.*?```|`[^`\n]*`", "", doc.read_text(encoding="utf-8"), flags=re.S)  # links, not code
    for target in LINK.findall(text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # http(s):, mailto:, or an anchor in the same page
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve()
        assert path.exists(), f"{doc.relative_to(ROOT)} links to {target}, which does not exist"
        if anchor and path.suffix == ".md":
            assert anchor in anchors(path), f"{doc.relative_to(ROOT)} links to {target}: no such heading"


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for the headings of a Markdown file ("## Past block_size: x" -> past-block_size-x)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#+ +(.+?) *$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower().replace("`", "")).replace(" ", "-") for h in headings}
