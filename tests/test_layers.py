"""The package's architecture, enforced: every import of a tca4rec module points down the
layer order written in ``tca4rec/__init__.py``, sits at module top, and no modules import
each other in a cycle. Imports are read with ``ast``, so nothing is executed.

Function-level imports of package modules are allowed in ``cli/`` only: the command line
must start (``--help``, argument errors) without loading torch and transformers.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tca4rec

PACKAGE = Path(tca4rec.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(source: str, module: str, is_package: bool) -> list[tuple[str, int, bool]]:
    """(imported tca4rec module, line, at module top) for every import of the package in ``source``."""
    tree = ast.parse(source)
    top = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` blocks and try/except at top level count as top
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module
                base = module.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [f"{target}.{a.name}" for a in node.names]  # a submodule, or a name of ``target``
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name == "tca4rec" or name.startswith("tca4rec."):
                found.append((name, node.lineno, id(node) in top))
    return found


def resolve(name: str, modules: set[str]) -> str | None:
    """The module an imported name belongs to (``tca4rec.cf.train_cf`` -> ``tca4rec.cf``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def layer_of(module: str, layers: list[tuple[str, ...]]) -> int:
    room = module.split(".")[1] if module.count(".") else ""
    for n, rooms in enumerate(layers):
        if room in rooms:
            return n
    raise AssertionError(f"{module}: room '{room}' is in no layer of tca4rec.LAYERS; add it there")


def violations(package_dir: Path, layers: list[tuple[str, ...]]) -> list[str]:
    """Every upward or same-layer cross-room import, misplaced import and import cycle under ``package_dir``."""
    files = {module_name(p, package_dir): p for p in sorted(package_dir.rglob("*.py"))}
    modules = set(files)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    problems = []
    for module, path in files.items():
        # The package root holds the version and re-exports the lowest layer, so it sits in layer 0.
        root = module == package_dir.name
        here = 0 if root else layer_of(module, layers)
        room = layers[0][0] if root else module.split(".")[1]
        for name, line, at_top in package_imports(path.read_text(encoding="utf-8"), module,
                                                 path.name == "__init__.py"):
            target = resolve(name, modules)
            if target is None or target == module:
                continue
            where = f"{path.relative_to(package_dir.parent)}:{line}"
            if target == package_dir.name:  # the root: layer 0, like the errors it re-exports
                continue
            there, target_room = layer_of(target, layers), target.split(".")[1]
            if there > here or (there == here and target_room != room and not root):
                problems.append(f"{where}: {module} (layer {here}) imports {target} (layer {there})")
            if not at_top and room != "cli":
                problems.append(f"{where}: function-level import of {target}; import it at module top")
            if at_top:
                graph[module].add(target)
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (or a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component) + [sorted(component)[0]])

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_import_points_down_and_no_cycles():
    assert violations(PACKAGE, tca4rec.LAYERS) == []


def test_every_room_of_the_package_is_in_a_layer():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    rooms |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert rooms == {room for layer in tca4rec.LAYERS for room in layer}


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg" / "tca4rec"
    for rel, text in {"__init__.py": "", **files}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


LAYERS = [("errors",), ("data",), ("llm",), ("cli",)]


def test_a_planted_upward_import_is_caught(tmp_path):
    root = _plant(tmp_path, {"errors.py": "", "data/__init__.py": "", "data/load.py": "from tca4rec.llm import run\n",
                             "llm/__init__.py": "", "llm/run.py": "from tca4rec.data import load\n",
                             "cli/__init__.py": ""})
    problems = violations(root, LAYERS)
    assert any("tca4rec.data.load (layer 1) imports tca4rec.llm.run (layer 2)" in p for p in problems)
    assert any(p.startswith("import cycle: tca4rec.data.load -> tca4rec.llm.run") for p in problems)
    assert not any("llm/run.py" in p and "layer" in p for p in problems)  # the downward one is fine


def test_a_hidden_function_level_import_is_caught_outside_the_cli(tmp_path):
    body = "def f():\n    from tca4rec.data import load\n    return load\n"
    root = _plant(tmp_path, {"errors.py": "", "data/__init__.py": "", "data/load.py": "",
                             "llm/__init__.py": "", "llm/run.py": body, "cli/__init__.py": "", "cli/main.py": body})
    problems = violations(root, LAYERS)
    assert problems == ["tca4rec/llm/run.py:2: function-level import of tca4rec.data.load; import it at module top"]


def test_a_relative_import_is_resolved(tmp_path):
    root = _plant(tmp_path, {"errors.py": "", "data/__init__.py": "from .load import x\n", "data/load.py": "x = 1\n",
                             "llm/__init__.py": "", "cli/__init__.py": "", "llm/run.py": "",
                             "data/bad.py": "from ..llm import run\n"})
    assert violations(root, LAYERS) == ["tca4rec/data/bad.py:1: tca4rec.data.bad (layer 1) imports tca4rec.llm.run (layer 2)"]


def test_a_room_outside_every_layer_is_named(tmp_path):
    root = _plant(tmp_path, {"nowhere.py": "from tca4rec import errors\n", "errors.py": ""})
    with pytest.raises(AssertionError, match="room 'nowhere' is in no layer"):
        violations(root, LAYERS)
