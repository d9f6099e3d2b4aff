"""The rule core imports one way: layers, then the contract and builders (rule.py), then the registry,
then the error bus, swap and the conformance kit. Guarded by reading the imports with ``ast``,
function-level ones included (type-only imports under ``if TYPE_CHECKING:`` are never executed and
are left out)."""

from __future__ import annotations

import ast
from pathlib import Path

import nni_bio

PACKAGE = Path(nni_bio.__file__).parent
CORE = ["errors.py", "layers.py", "rule.py", "_registry.py", "error_bus.py", "swap.py", "testing.py"]


def module_name(path: Path) -> str:
    return ".".join(("nni_bio",) + path.relative_to(PACKAGE).with_suffix("").parts)


def core_modules() -> dict[str, Path]:
    paths = [PACKAGE / name for name in CORE] + sorted((PACKAGE / "rules").glob("*.py"))
    return {module_name(p): p for p in paths if p.name != "__init__.py"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``path`` imports at run time, at any depth (functions included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's own package
                parts = module_name(path).split(".")[:-node.level]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]  # `from nni_bio import dfa`
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = 1, [node]
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {name: imported_modules(path, set(modules)) - {name} for name, path in modules.items()}


def test_rule_core_has_no_import_cycle() -> None:
    graph = import_graph()
    assert {"nni_bio.core.rule", "nni_bio.core.layers", "nni_bio.core._registry", "nni_bio.core.error_bus",
            "nni_bio.rules.dfa"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in the rule core: " + " -> ".join(cycle or [])


def test_layers_then_contract_then_registry() -> None:
    graph = import_graph()
    assert graph["nni_bio.core.layers"] <= {"nni_bio.core.errors"}  # layers know no rule module, and no names
    assert "nni_bio.core.layers" in graph["nni_bio.core.rule"]
    assert "nni_bio.core._registry" not in graph["nni_bio.core.rule"] | graph["nni_bio.core.error_bus"]
    for name, deps in graph.items():
        if name.startswith("nni_bio.rules."):
            assert "nni_bio.core._registry" not in deps, name  # a rule file needs no name lookups


def test_the_cycle_finder_finds_function_level_imports(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from nni_bio import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from nni_bio.a import x\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nni_bio.a import y\n")
    known = {"nni_bio.a", "nni_bio.b", "nni_bio.c"}
    assert imported_modules(tmp_path / "b.py", known) == {"nni_bio.a"}
    assert imported_modules(tmp_path / "c.py", known) == set()
    assert find_cycle({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_core_module_shares_a_name_with_a_rule_file() -> None:
    core = {p.stem for p in PACKAGE.glob("*.py")}
    rules = {p.stem for p in (PACKAGE / "rules").glob("*.py")} - {"__init__"}
    assert not core & rules, f"nni_bio/<name>.py and nni_bio/rules/<name>.py both exist: {sorted(core & rules)}"


REPO = PACKAGE.parent
#: the trial entry points and the command line: processes start there, nothing below imports them
ENTRY_POINTS = {"nni_bio.trial", "nni_bio.strategies.oneshot.trial", "nni_bio.oneshot", "nni_bio.cli"}
#: who may read an entry point: the CLI layer, and the preflight, which parses trial command lines with
#: the trials' own argument parsers (plus the warning alias nni_bio.oneshot)
MAY_IMPORT_ENTRY_POINTS = ("nni_bio.cli", "nni_bio.commands.", "nni_bio.launch.preflight", "nni_bio.oneshot",
                           "nni_bio.__main__")


def all_modules() -> dict[str, Path]:
    """Every module of the installed package, ``search_spaces/`` and ``strategies/`` under their installed names."""
    roots = {"nni_bio": PACKAGE, "nni_bio.search_spaces": REPO / "search_spaces",
             "nni_bio.strategies": REPO / "strategies"}
    modules = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((prefix, *parts))] = path
    return modules


def test_dependencies_point_down_to_the_entry_points_not_up_from_them() -> None:
    modules = all_modules()
    assert {"nni_bio.strategies.oneshot.loop", "nni_bio.train.trial_runtime", "nni_bio.strategies.multi_trial"} <= set(modules)
    wrong = {name: sorted(imported_modules(path, ENTRY_POINTS) - {name}) for name, path in modules.items()
             if not name.startswith(MAY_IMPORT_ENTRY_POINTS)}
    wrong = {name: deps for name, deps in wrong.items() if deps}
    assert not wrong, f"library modules importing an entry point: {wrong}"
