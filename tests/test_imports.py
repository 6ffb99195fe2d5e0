"""
The echoplus package imports one way: no module imports, directly or
through others, a module that imports it back.

The graph is read from the source with C{ast}, not by importing, so it
holds every C{import} of an echoplus module wherever it is written: at the
top, inside a function (a lazy import hides a cycle, it does not remove
it) or under C{try}.  Only imports under C{if TYPE_CHECKING:} are left
out: they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import echoplus

PACKAGE = Path(echoplus.__file__).parent


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """
    The dotted name of the module at C{path} inside the package at C{root}.
    """
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(
    nodes: list[ast.AST], type_checking: bool
) -> list[ast.Import | ast.ImportFrom]:
    """
    Every import statement in or under C{nodes}; those in C{if
    TYPE_CHECKING:} bodies only with C{type_checking}.
    """
    found: list[ast.Import | ast.ImportFrom] = []
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif (
            isinstance(node, ast.If)
            and _is_type_checking(node.test)
            and not type_checking
        ):
            found.extend(_import_nodes(list(node.orelse), type_checking))
        else:
            found.extend(_import_nodes(list(ast.iter_child_nodes(node)), type_checking))
    return found


def imported_modules(
    source: str,
    name: str,
    is_package: bool,
    modules: set[str],
    type_checking: bool = False,
) -> set[str]:
    """
    The modules of C{modules} that the module C{name} imports, each with
    the packages above it (importing C{a.b.c} runs C{a/b/__init__} too),
    except the packages C{name} is itself part of.  Imports for type
    checkers only count with C{type_checking}.
    """
    package = name if is_package else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _import_nodes([ast.parse(source)], type_checking):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        targets.add(base)
        # "from package import submodule" imports the submodule.
        targets.update(f"{base}.{alias.name}" for alias in node.names)
    found: set[str] = set()
    for target in targets:
        parts = target.split(".")
        for end in range(2, len(parts) + 1):
            prefix = ".".join(parts[:end])
            # A module's own packages are set up before it runs: no edge.
            if prefix in modules and not (name + ".").startswith(prefix + "."):
                found.add(prefix)
    return found


def import_graph(
    root: Path = PACKAGE, type_checking: bool = False
) -> dict[str, set[str]]:
    """
    Each module of the package at C{root} mapped to the package's modules
    it imports (with C{type_checking}, also those it imports for type
    checkers only).
    """
    paths = {module_name(path, root): path for path in sorted(root.rglob("*.py"))}
    modules = set(paths)
    return {
        name: imported_modules(
            path.read_text(encoding="utf-8"),
            name,
            path.name == "__init__.py",
            modules,
            type_checking,
        )
        for name, path in paths.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """
    One cycle, as a closed path C{[a, b, ..., a]}, for every strongly
    connected group of more than one module (or a module importing
    itself), in a stable order.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1 or node in graph.get(node, ()):
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(group, graph) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, set[str]]) -> list[str]:
    """
    A shortest closed path through the smallest-named module of C{group}.
    """
    start = min(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & group):
                if other == start:
                    return [*paths[node], start]
                if other not in paths:
                    paths[other] = [*paths[node], other]
                    following.append(other)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # pragma: no cover


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """
    The modules that C{start} imports, directly or through others.
    """
    seen: set[str] = set()
    todo = [start]
    while todo:
        for other in graph[todo.pop()] - seen:
            seen.add(other)
            todo.append(other)
    return seen


class ImportGraphTests(SynchronousTestCase):
    """
    The reader of the graph, on small made-up sources.
    """

    MODULES = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}

    def imports(self, source: str, name: str = "pkg.a") -> set[str]:
        return imported_modules(source, name, False, self.MODULES)

    def test_every_form_of_import(self) -> None:
        """
        C{import}, C{from X import Y}, a submodule imported by name and a
        relative import all count, each with the packages above it.
        """
        self.assertEqual(self.imports("import pkg.b"), {"pkg.b"})
        self.assertEqual(self.imports("from pkg.b import thing"), {"pkg.b"})
        self.assertEqual(
            self.imports("from pkg.sub import c"), {"pkg.sub", "pkg.sub.c"}
        )
        self.assertEqual(self.imports("from .sub.c import x"), {"pkg.sub", "pkg.sub.c"})
        self.assertEqual(self.imports("import os, twisted"), set())

    def test_lazy_imports_count(self) -> None:
        """
        An import inside a function or a C{try} is an edge like any other.
        """
        source = (
            "def f():\n"
            "    try:\n        from pkg.b import x\n"
            "    except ImportError:\n        pass\n"
        )
        self.assertEqual(self.imports(source), {"pkg.b"})

    def test_type_checking_imports_do_not_count(self) -> None:
        """
        Imports under C{if TYPE_CHECKING:} are left out, their C{else:} is not.
        """
        source = (
            "import typing\n"
            "if typing.TYPE_CHECKING:\n    from pkg.b import x\n"
            "else:\n    from pkg.sub import c\n"
        )
        self.assertEqual(self.imports(source), {"pkg.sub", "pkg.sub.c"})
        typed = imported_modules(source, "pkg.a", False, self.MODULES, True)
        self.assertEqual(typed, {"pkg.b", "pkg.sub", "pkg.sub.c"})

    def test_cycles_found(self) -> None:
        """
        A cycle, direct or through a third module, is reported as a path.
        """
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(find_cycles(graph), [["a", "b", "c", "a"]])
        self.assertEqual(find_cycles({"a": {"b"}, "b": set()}), [])


class NoImportCycleTests(SynchronousTestCase):
    """
    The echoplus package itself.
    """

    def test_graph_is_read(self) -> None:
        """
        The graph covers the package and sees a known edge (so an empty
        graph cannot pass the next test).
        """
        graph = import_graph()
        self.assertIn("echoplus.service", graph)
        self.assertIn("echoplus.config", graph["echoplus.service"])

    def test_no_import_cycles(self) -> None:
        """
        No echoplus module imports itself back through others.
        """
        cycles = find_cycles(import_graph())
        self.assertEqual(
            cycles, [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
        )

    def test_reload_does_not_know_the_service(self) -> None:
        """
        A reload plan is worked out from settings alone and the service
        applies it: C{echoplus.reload} reaches C{echoplus.service} through
        no import, not even one made for type checkers only.
        """
        graph = import_graph(type_checking=True)
        self.assertIn("echoplus.reload", graph["echoplus.service"])
        self.assertNotIn("echoplus.service", reachable(graph, "echoplus.reload"))
