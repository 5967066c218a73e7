"""The shape of the code base: the package's phases depend only downward, no package module imports a top-level script,
no import cycles, and a family interface that knows no family. Imports are read with `ast`, so an import inside a
function counts as much as one at the top: either becomes a circular-import error the day someone moves it."""

from __future__ import annotations

import ast
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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


# Each package module's layer, by the longest matching prefix: a module may import its own layer and the ones below.
# common is at the bottom and the top-level scripts at the top. The model families sit in the middle: their trainers
# build on train's shared parts (train.trainer, train.arguments), and everything that chooses a family for a model
# (online preparation, serving, evaluation, train.run) goes through families.registry, above them. A family's options
# module is config: it holds the family's keys and must stay as light to import as the rest of the configuration.
LAYERS = {
    "kowhisper": 0,  # the package docstring
    "kowhisper.common": 0,
    "kowhisper.config": 1,
    "kowhisper.families.whisper.options": 1,
    "kowhisper.families.ctc.options": 1,
    "kowhisper.families": 2,  # the package docstring
    "kowhisper.families.base": 2,
    "kowhisper.families.export_folders": 2,
    "kowhisper.train": 3,
    "kowhisper.families.whisper": 4,
    "kowhisper.families.ctc": 4,
    "kowhisper.families.registry": 5,
    "kowhisper.online": 6,
    "kowhisper.train.run": 6,
    "kowhisper.serve": 7,
    "kowhisper.evaluate": 8,  # scores long recordings from a manifest (online.sources) as serve transcribes them
    "kowhisper.serve.run": 9,  # inference.py: transcribes (serve), and scores an export it makes (evaluate)
    "kowhisper.testing": 9,
    "kowhisper.commands": 9,
}
TOP = 10  # the top-level scripts and the config.py and utils.py re-exports


def layer_of(module: str) -> int:
    if not module.startswith(PACKAGE):
        return TOP
    prefixes = [prefix for prefix in LAYERS if module == prefix or module.startswith(prefix + ".")]
    return LAYERS[max(prefixes, key=len)]


def test_every_package_module_has_a_layer():
    for module in project_modules():
        if module.startswith(PACKAGE + "."):
            assert any(module == prefix or module.startswith(prefix + ".") for prefix in LAYERS if prefix != PACKAGE), module


def test_phases_depend_only_downward():
    upward = sorted(f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
                    for module, targets in import_graph().items() for target in targets if layer_of(target) > layer_of(module))
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_package_module_imports_a_top_level_module():
    top_level = {module for module in project_modules() if not module.startswith(PACKAGE)}
    offenders = sorted(f"{module} imports {target}" for module, targets in import_graph().items() if module.startswith(PACKAGE)
                       for target in targets & top_level)
    assert not offenders, "\n".join(offenders)


def test_layer_of_reads_the_longest_prefix():
    assert layer_of("kowhisper.train.arguments") == 3
    assert layer_of("kowhisper.train.run") == 6
    assert layer_of("kowhisper.families.whisper.trainer") == 4
    assert layer_of("kowhisper.families.base") == 2
    assert layer_of("train_offline") == TOP


def test_imports_inside_functions_and_relative_imports_are_read(tmp_path):
    package = tmp_path / "kowhisper" / "families" / "whisper"
    package.mkdir(parents=True)
    (package / "trainer.py").write_text(
        "from . import features\nfrom .engines import Decoding\nfrom ...common.text import format_percent\n"
        "def build():\n    import kowhisper.train.arguments\n    from kowhisper.train import stages\n"
    )
    names = imported_names("kowhisper.families.whisper.trainer", package / "trainer.py")
    assert {"kowhisper.families.whisper.features", "kowhisper.families.whisper.engines", "kowhisper.common.text",
            "kowhisper.train.arguments", "kowhisper.train.stages"} <= names
    # and in the project itself
    assert {"kowhisper.families.whisper.family", "kowhisper.families.ctc.family"} <= import_graph()["kowhisper.families.registry"]


def test_no_import_cycle_among_project_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_names_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_family_interface_imports_no_family():
    families = {module for module in project_modules()
                if module.startswith((f"{PACKAGE}.families.whisper", f"{PACKAGE}.families.ctc", f"{PACKAGE}.families.registry"))}
    imported = import_graph()[f"{PACKAGE}.families.base"]
    assert not imported & families, f"kowhisper.families.base imports {sorted(imported & families)}"
