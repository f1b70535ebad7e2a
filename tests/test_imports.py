"""No import cycles in ``embedx/``: the module graph, built from the source with ``ast``, is acyclic.

What counts as an edge ``A -> B`` (``B`` a module of the package):

- every ``import`` / ``from ... import`` statement in ``A``, absolute or relative, at module level
  *and* inside functions or classes. A function-level import is how embedx keeps heavy modules
  out of ``embedx --help``, but it still makes ``A`` depend on ``B``; a cycle hidden inside a
  function is a cycle of concepts all the same (two modules that each need the other), so it
  counts.
- imports under ``if TYPE_CHECKING:`` do *not* count: they never run, and they are the standard
  way for a type annotation to name a class without depending on its module.
- ``from pkg import name`` is an edge to ``pkg.name`` when that is a module of the package, else to
  ``pkg`` (its ``__init__``). Importing ``a.b.c`` is an edge to ``a.b.c`` only, not to its parent
  packages: a package ``__init__`` that re-exports its submodules would otherwise form a "cycle"
  with each of them, which Python resolves fine and which says nothing about the design.
- dynamic imports count too: ``importlib.import_module("pkg.x")`` and ``__import__("pkg.x")``
  with a literal name are edges to ``pkg.x``. When a module imports a *computed* name (an
  f-string, a variable: a lazy registry, a module ``__getattr__``), every string constant of that
  module that names one of the package's modules (``"pkg.x"``, ``"pkg.x:attr"``, or the literal
  prefix of an f-string such as ``f"pkg.{name}"``, which stands for every module under it) is an
  edge: the checker cannot know which of them the computed name will be, so it assumes all.
"""

from __future__ import annotations

import ast
from pathlib import Path

import embedx

PACKAGE = Path(embedx.__file__).parent


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted name -> file of every module under ``root`` (the folder of ``package``)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join([package, *parts])] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` except those under ``if TYPE_CHECKING:``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


_DYNAMIC = ("import_module", "__import__")


def _dynamic_imports(tree: ast.AST, modules: dict[str, Path]) -> set[str]:
    """Modules a file imports by name at run time (see the module docstring for the rules)."""
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and node.args
             and ((isinstance(node.func, ast.Attribute) and node.func.attr in _DYNAMIC)
                  or (isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC))]
    targets: set[str] = set()
    computed = False
    for call in calls:
        arg = call.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            targets.add(arg.value)
        else:
            computed = True
    if computed:
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets.add(node.value.partition(":")[0])
            elif isinstance(node, ast.JoinedStr) and node.values \
                    and isinstance(node.values[0], ast.Constant):  # f"pkg.{name}": all under pkg.
                prefix = str(node.values[0].value)
                targets.update(m for m in modules if m.startswith(prefix) and m != prefix.rstrip("."))
    return {t for t in targets if t in modules}


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (see the module docstring for what counts).

    Args:
        root: folder of the package.
        package: its dotted name.

    Returns:
        The adjacency sets, one entry per module.
    """
    modules = module_names(root, package)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        graph[name].update(t for t in _dynamic_imports(tree, modules) if t != name)
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # relative: resolve against the importing module's package
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[: len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted.

    Args:
        graph: module -> modules it imports.

    Returns:
        Sorted list of cycles; empty when the graph is acyclic.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(cycles)


def test_embedx_has_no_import_cycle():
    graph = import_graph(PACKAGE, "embedx")
    assert len(graph) > 30 and "embedx.backends.hf" in graph
    assert "embedx.backends.base" in graph["embedx.backends.hf"]  # the graph sees real edges
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in embedx/: " + "; ".join(" <-> ".join(c) for c in cycles)


def private_imports(root: Path, package: str) -> list[str]:
    """``module: from other import _name`` for every private name one module takes from another.

    Args:
        root: folder of the package.
        package: its dotted name.

    Returns:
        One line per offence, sorted; empty when every module keeps to the others' public names.
    """
    found = []
    for name, path in module_names(root, package).items():
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if not (node.level or (node.module or "").split(".")[0] == package):
                continue  # a third-party library's private names are its business, not ours
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{name}: from {'.' * node.level}{node.module or ''} import {alias.name}")
    return sorted(found)


#: the family backends: each is one registry entry and imports no other one
FAMILY_BACKENDS = ("embedx.backends.hf", "embedx.backends.whisper", "embedx.backends.opensmile")


#: packages whose files share package-private helpers: ``embedx.store`` is one HDF5 schema
#: split by concern (spec, lock, base, layout, items, failures, reader, writer); its ``_attr``,
#: ``_open_h5``, ``_create_set`` ... are the schema's internals, public to none outside it.
#: Merge is held to the writer's public seam all the same (checked below).
PACKAGE_PRIVATE = ("embedx.store",)


def test_no_module_imports_another_modules_private_names():
    def allowed(line: str) -> bool:
        importer, source = line.split(": from ")[0], line.split(": from ")[1].split(" import ")[0]
        return any(importer.startswith(p + ".") and source.startswith(p + ".") for p in PACKAGE_PRIVATE) \
            and importer != "embedx.store.merging"

    assert [line for line in private_imports(PACKAGE, "embedx") if not allowed(line)] == []
    # the allowance is real but bounded: the store's files do share internals, merge does not
    shared = private_imports(PACKAGE, "embedx")
    assert any(line.startswith("embedx.store.writer:") for line in shared)
    assert not any(line.startswith("embedx.store.merging:") for line in shared)


def test_family_backends_import_no_other_backend():
    graph = import_graph(PACKAGE, "embedx")
    for backend in FAMILY_BACKENDS:
        assert backend in graph
        assert not graph[backend] & set(FAMILY_BACKENDS), f"{backend} imports {graph[backend] & set(FAMILY_BACKENDS)}"
    # the registry is what picks Whisper for an ``hf`` checkpoint
    assert {"embedx.backends.hf", "embedx.backends.whisper"} <= graph["embedx.backends"]


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_checker_finds_a_planted_cycle_at_any_depth(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": "",
        "a.py": "from pkg.sub import b\n",               # absolute, module level
        "sub/__init__.py": "",
        "sub/b.py": "def f():\n    from .. import c\n",  # relative, inside a function
        "sub/c.py": "",
        "c.py": "import pkg.a\n",                         # closes a -> sub.b -> c -> a
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "from pkg import d\n",                    # d -> e only under TYPE_CHECKING
        "f.py": "from .g import x\n",
        "g.py": "from pkg import f\nx = 1\n",             # relative from-import, module level
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.c"}
    assert graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"}
    assert find_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"], ["pkg.f", "pkg.g"]]


def test_checker_sees_dynamic_imports_and_lazy_attributes(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {
        "__init__.py": ("import importlib\n"
                        "def __getattr__(name):\n"
                        "    return importlib.import_module(f'pkg.{name}')\n"),   # all under pkg.
        "api.py": "from pkg import stage\n",
        "stage.py": "import importlib\ndef run():\n    return importlib.import_module('pkg.api').go\n",
        "registry.py": ("import importlib\nREG = {'x': 'pkg.plugin:make'}\n"
                        "def create(k):\n    m, _, a = REG[k].partition(':')\n"
                        "    return getattr(importlib.import_module(m), a)\n"),
        "plugin.py": "from pkg import registry\n",
        "quiet.py": "NAME = 'pkg.api'\n",   # a module name in a string, never imported: no edge
    })
    graph = import_graph(root, "pkg")
    assert graph["pkg.stage"] == {"pkg.api"}                      # a literal import_module
    assert graph["pkg.registry"] == {"pkg.plugin"}                # a "module:attr" registry entry
    assert {"pkg.api", "pkg.stage", "pkg.plugin"} <= graph["pkg"]  # an f-string stands for all
    assert graph["pkg.quiet"] == set()
    assert find_cycles(graph) == [["pkg.api", "pkg.stage"], ["pkg.plugin", "pkg.registry"]]


def test_checker_finds_planted_private_imports(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {"__init__.py": "", "a.py": "_x = 1\n__all__ = []\n",
                  "b.py": "from pkg.a import _x\nfrom .a import __all__\nfrom os.path import _get_sep\n",
                  "c.py": "def f():\n    from . import a as _a\n    from .a import _x as x\n"})
    assert private_imports(root, "pkg") == ["pkg.b: from pkg.a import _x", "pkg.c: from .a import _x"]


def test_checker_passes_an_acyclic_package(tmp_path):
    root = tmp_path / "pkg"
    _write(root, {"__init__.py": "from pkg import a\n", "a.py": "import pkg.b\n", "b.py": "x = 1\n"})
    assert find_cycles(import_graph(root, "pkg")) == []


def test_a_backend_and_the_store_spec_load_without_h5py():
    """Only the store's file operations need h5py: its constants and specs (embedx.store.spec,
    e.g. RANDOM_SUFFIX for hf.py) load without it, also through ``from embedx.store import``."""
    import subprocess
    import sys

    code = ("import sys, embedx.backends.hf, embedx.store.spec\n"
            "from embedx.store import RANDOM_SUFFIX, FeatureSetSpec\n"
            "assert 'h5py' not in sys.modules, 'h5py imported'\n"
            "from embedx.store import StoreReader\n"
            "assert 'h5py' in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


#: the house's size limits (README "Contributing"): a function longer than this is split
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600


def oversized(root: Path) -> list[str]:
    """``path: N lines`` of every module, ``path:function: N lines`` of every function over the limits."""
    found = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{path.relative_to(root)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.name}: {length} lines")
    return found


def test_no_function_over_80_lines_and_no_module_over_600():
    assert oversized(PACKAGE) == []


def test_the_size_check_sees_a_long_function_and_a_long_module(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    _write(tmp_path / "pkg", {"a.py": f"def long():\n{body}\n", "b.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
                              "c.py": "def short():\n    return 1\n"})
    assert oversized(tmp_path / "pkg") == [f"a.py:long: {MAX_FUNCTION_LINES + 1} lines",
                                           f"b.py: {MAX_MODULE_LINES + 1} lines"]
