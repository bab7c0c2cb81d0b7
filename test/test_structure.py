"""Guards of the package structure: no import cycle inside our packages, and synthesis (``espnet2.tts_diff``) uses
separation (``espnet2.enh.clipsep``) only through its public names.

Imports are read from the source (every ``import`` statement, function-local ones too), so a cycle hidden by a
function-local import is found as well.
"""

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("espnet2.enh.clipsep", "espnet2.tts_diff")


def _modules() -> Dict[str, Path]:
    """Dotted module name -> file, for every module of our packages (packages as their ``__init__``)."""
    out = {}
    for package in PACKAGES:
        root = REPO / package.replace(".", "/")
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[Tuple[str, str, int]]:
    """``(module, imported name or "", line)`` of every import statement of a module, resolved to absolute names."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, "", node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                yield base, alias.name, node.lineno


def _edges() -> Dict[str, Set[str]]:
    """Module -> our modules it imports (``from pkg import submodule`` counts as importing the submodule)."""
    graph = {m: set() for m in MODULES}
    for name, path in MODULES.items():
        for module, imported, _ in _imports(name, path):
            target = f"{module}.{imported}" if f"{module}.{imported}" in MODULES else module
            if target in MODULES and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_guard_sees_our_modules_and_their_imports():
    graph = _edges()
    assert "espnet2.enh.clipsep.separate.separator" in graph and "espnet2.tts_diff.generate" in graph
    # a function-local import counts: files.pack imports files.weights only inside verify_pack
    assert "espnet2.enh.clipsep.files.weights" in graph["espnet2.enh.clipsep.files.pack"]


def test_cycle_finder_finds_a_hidden_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_inside_our_packages():
    assert _cycles(_edges()) == []


def _public_names(module: str) -> Set[str]:
    """A module's ``__all__`` as its source states it (a package's too)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return set(ast.literal_eval(node.value))
    return set()


def test_synthesis_imports_only_public_separation_names():
    bad = []
    for name, path in MODULES.items():
        if not name.startswith("espnet2.tts_diff"):
            continue
        for module, imported, line in _imports(name, path):
            if not module.startswith("espnet2.enh.clipsep"):
                continue
            where = f"{path.relative_to(REPO)}:{line}"
            if any(part.startswith("_") for part in module.split(".")):
                bad.append(f"{where}: private module {module}")
            elif f"{module}.{imported}" in MODULES:
                continue  # a public submodule
            elif not imported:
                bad.append(f"{where}: import {module} (import names from it instead)")
            elif imported.startswith("_") or imported not in _public_names(module):
                bad.append(f"{where}: {module}.{imported} is not in its __all__")
    assert bad == []
