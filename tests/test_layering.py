"""Imports point one way, as the README's map draws them: the entry scripts call the tools (run, sample_cli,
...), which build on the trainer, which trains the model, which uses attention. This test reads every
import of minigpt (with ast: imports inside functions and under TYPE_CHECKING count too) and checks that
each points to a lower layer, so persistence never learns of the command line, nor accounting of
Hugging Face, and no cycle can close."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS = [
    # leaves: they import nothing from minigpt, so each reads on its own
    {"config", "errors", "shipped", "tables", "roles", "tb_attention.summary"},
    # the attention (it reads only its settings), settings in files, tokenizers, devices, parameter accounting;
    # the TensorBoard plugin
    {"attention", "config_io", "tokenizer", "runtime", "params", "tb_attention.plugin"},
    # the model, the data, the loggers
    {"model", "data", "metrics"},
    # sampling and checkpoints (they build a model)
    {"generate", "checkpoint"},
    # the trainer (it saves checkpoints)
    {"trainer"},
    # the command line: flags over config files, and the exit contract every tool's main() keeps
    {"cli", "entry"},
    # Hugging Face GPT-2 in and out (its export command reads flags)
    {"hf"},
    # the tools behind train.py, sample.py, data/prepare.py and python -m minigpt.{params,bench}
    {"run", "sample_cli", "prepare_cli", "params_cli", "bench"},
    # `minigpt COMMAND`, which runs any of them
    {"commands"},
]
"""minigpt's modules, bottom to top: a module imports only from layers below its own."""

NOTHING_FROM_MINIGPT = ["config", "errors"]
"""The README's promise: the settings read alone (errors: anyone may raise them); attention reads only its settings."""


ENTRY_SCRIPTS = {"train.py": {"run", "commands"}, "sample.py": {"sample_cli"}, "data/prepare.py": {"prepare_cli"}}
"""The thin scripts, and the modules each may import."""


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if module in layer:
            return i
    raise AssertionError(f"minigpt.{module} is in no layer of tests/test_layering.py; add it where it belongs")


def is_main_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` runs only when the file is run as a script (`python -m minigpt.params`
    starts minigpt/params_cli.py); importing the module never runs it, so it is no dependency."""
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def minigpt_imports(path: Path, package: str) -> set[str]:
    """The minigpt modules a file imports anywhere in it (as names under minigpt: "cli", "tb_attention.summary")."""
    found = set()

    def visit(node: ast.AST) -> None:
        if is_main_block(node):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "minigpt")
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:  # relative: from the file's own package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{module}" if module else base
            if module == "minigpt":  # from minigpt import cli, entry
                found.update(f"minigpt.{a.name}" for a in node.names)
            elif module.split(".")[0] == "minigpt":
                found.add(module)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {name.removeprefix("minigpt.") for name in found if name != "minigpt"}


def modules() -> dict[str, Path]:
    """Every module of the package, by its name under minigpt (packages' __init__ files left out: they are empty)."""
    root = ROOT / "minigpt"
    names = {}
    for path in sorted(root.rglob("*.py")):
        if path.name != "__init__.py":
            names[".".join(path.relative_to(root).with_suffix("").parts)] = path
    return names


@pytest.mark.parametrize("module", modules())
def test_imports_point_down(module):
    path = modules()[module]
    package = ".".join(["minigpt", *module.split(".")[:-1]])
    own = layer_of(module)
    upward = sorted(m for m in minigpt_imports(path, package) if layer_of(m) >= own)
    assert not upward, f"minigpt/{module} (layer {own}) imports {upward}, which are not below it"


@pytest.mark.parametrize("module", NOTHING_FROM_MINIGPT)
def test_the_core_reads_on_its_own(module):
    assert minigpt_imports(ROOT / "minigpt" / f"{module}.py", "minigpt") == set()


def test_attention_reads_only_its_settings():
    assert minigpt_imports(ROOT / "minigpt" / "attention.py", "minigpt") == {"config"}


@pytest.mark.parametrize("script", ENTRY_SCRIPTS)
def test_entry_scripts_only_call_their_tool(script):
    assert minigpt_imports(ROOT / script, "") <= ENTRY_SCRIPTS[script]


def test_the_reader_sees_imports_anywhere(tmp_path):
    """The check itself: imports inside functions and under TYPE_CHECKING count, a script's own block does not."""
    path = tmp_path / "probe.py"
    path.write_text(
        "from typing import TYPE_CHECKING\n"
        "from minigpt import cli, entry\n"
        "if TYPE_CHECKING:\n    from minigpt.hf import HFError\n"
        "def f():\n    import minigpt.run\n    from . import params\n"
        "if __name__ == '__main__':\n    from minigpt.params_cli import main\n"
    )
    assert minigpt_imports(path, "minigpt") == {"cli", "entry", "hf", "run", "params"}
