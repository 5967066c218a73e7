"""The shape of the code base: no import cycles among the project's modules, and a family interface that knows no
family. Imports are read with `ast`, so an import inside a function counts as much as one at the top: either
becomes a circular-import error the day someone moves it."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "kowhisper"


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for the top-level scripts and modules and everything under kowhisper/."""
    modules = {path.stem: path for path in PROJECT_ROOT.glob("*.py")}
    for path in (PROJECT_ROOT / PACKAGE).rglob("*.py"):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the file may refer to, relative imports resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module
            names.add(origin)
            # `from kowhisper import ctc` imports the module kowhisper.ctc.
            names.update(f"{origin}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules its import statements name. Importing a.b.c also runs the package a.b's
    __init__ first, but that implicit step is not drawn: a package whose methods import its own submodules, which
    import the package's interface, is how packages work, and Python finishes the __init__ before the submodule."""
    modules = project_modules()
    return {module: {name for name in imported_names(module, path) if name in modules} - {module}
            for module, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path):
    package = tmp_path / "kowhisper" / "whisper"
    package.mkdir(parents=True)
    (package / "trainer.py").write_text(
        "from . import features\nfrom .engines import Decoding\nfrom ..text import format_percent\n"
        "def build():\n    import kowhisper.training\n    from kowhisper import stages\n"
    )
    names = imported_names("kowhisper.whisper.trainer", package / "trainer.py")
    assert {"kowhisper.whisper.features", "kowhisper.whisper.engines", "kowhisper.text", "kowhisper.training",
            "kowhisper.stages"} <= names
    # and in the project itself: kowhisper.modeling imports kowhisper.checkpoints inside run_checkpoints
    assert "kowhisper.checkpoints" in import_graph()["kowhisper.modeling"]
    assert {"kowhisper.whisper", "kowhisper.ctc"} <= import_graph()["kowhisper.families"]


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_family_interface_imports_no_family():
    families = {module for module in project_modules() if module.startswith((f"{PACKAGE}.whisper", f"{PACKAGE}.ctc"))}
    imported = import_graph()[f"{PACKAGE}.modeling"]
    assert not imported & families, f"kowhisper.modeling imports {sorted(imported & families)}"
    assert "kowhisper.families" not in imported
