"""Dependencies point one way: every module of nni-bio belongs to a layer, and imports only from its own layer
or from a lower one (``docs/src/layout.md``). Read with ``ast`` from the source, every import counted: module
level and inside functions; only type-only imports under ``if TYPE_CHECKING:`` (never executed) are left out.

The layers, lowest first (layers on one line are siblings and may not import each other)::

    core                     nni_bio/core/, the facade nni_bio/__init__.py, nni_bio.testing (and the 0.1 aliases
                             nni_bio.rule, .layers, .errors; nni_bio.training is an alias in train)
    rules, data              the built-in rules; offline data sets
    nas                      rules as NNI mutables, candidates, cell ops, fixed models
    search_spaces            the model spaces (installed as nni_bio.search_spaces)
    train                    the training loop, final training, checkpoints, the trial runtime
    strategies               search strategies and the two trial entry points (nni_bio.trial and
                             nni_bio.strategies.oneshot.trial)
    launch, evaluate         nnictl experiments and their preflight; robustness and run reports
    study                    nni-bio study
    commands                 the nni-bio command line (nni_bio/commands/, cli.py, __main__.py)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nni_bio

PACKAGE = Path(nni_bio.__file__).parent
REPO = PACKAGE.parent
#: where each installed package's files are in the repository
ROOTS = {"nni_bio": PACKAGE, "nni_bio.search_spaces": REPO / "search_spaces", "nni_bio.strategies": REPO / "strategies"}

#: the layers, lowest first; a module may import from its own layer and from the layers before its level
LEVELS: list[tuple[str, ...]] = [("core",), ("rules", "data"), ("nas",), ("search_spaces",), ("train",),
                                 ("strategies",), ("launch", "evaluate"), ("study",), ("commands",)]
LEVEL = {layer: level for level, layers in enumerate(LEVELS) for layer in layers}
#: modules directly in nni_bio/ and their layer; everything else is named by its folder
TOP_LEVEL = {"nni_bio": "core", "nni_bio.testing": "core", "nni_bio.rule": "core", "nni_bio.layers": "core",
             "nni_bio.errors": "core", "nni_bio.training": "train",
             "nni_bio.trial": "strategies", "nni_bio.cli": "commands", "nni_bio.__main__": "commands"}
#: the layers that may import NNI (the rule core, the rules and the data sets test and run without it)
NNI_FREE = {"core", "rules", "data"}
#: the 0.1 import paths of the plugin guide and the example plugin: they warn, and nothing of nni-bio imports them
ALIASES = {"nni_bio.rule", "nni_bio.layers", "nni_bio.errors", "nni_bio.training"}
#: processes start here; below the launcher, nothing imports them
ENTRY_POINTS = {"nni_bio.trial", "nni_bio.strategies.oneshot.trial", "nni_bio.cli", "nni_bio.__main__"}


def layer_of(module: str) -> str | None:
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    parts = module.split(".")
    return parts[1] if len(parts) >= 2 and parts[1] in LEVEL else None


def all_modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the installed package, ``search_spaces/`` and ``strategies/`` under their installed
    names: name -> (file, is a package's ``__init__``)."""
    modules = {}
    for prefix, root in ROOTS.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if prefix == "nni_bio" and parts[0] in ("search_spaces", "strategies", "examples"):
                continue  # a development link to the top-level folders, or shipped examples (not library code)
            package = parts[-1] == "__init__"
            modules[".".join((prefix, *(parts[:-1] if package else parts)))] = (path, package)
    return modules


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, module: str, package: bool = False) -> set[str]:
    """Every module name ``path`` imports at run time, at any depth (functions included), as written:
    ``from a.b import c`` gives ``a.b.c`` (``c`` may be a module) and ``a.b``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and _is_type_checking(node)
               for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the module's own package
                parts = module.split(".") if package else module.split(".")[:-1]
                parts = parts[:len(parts) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return found


def resolve(names: set[str], known: set[str]) -> set[str]:
    """The modules of ``known`` that ``names`` import: ``from pkg import mod`` is an import of ``pkg.mod``
    (``pkg`` itself is imported as its parent, as for ``import pkg.mod``); ``from pkg import name`` is an
    import of ``pkg``; ``from pkg.mod import name`` of ``pkg.mod``."""
    found = set()
    for name in names:
        if any(other.startswith(name + ".") and other in known for other in names):
            continue  # `from a import b` where a.b is a module: the import is of a.b
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name:
            found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    known = set(modules)
    return {name: resolve(imported_names(path, name, package), known) - {name}
            for name, (path, package) in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node], path[len(path):] = 1, [node]
        for nxt in sorted(graph.get(node, ())):
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


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, or of a sibling layer on the same level, as ``a (layer) -> b (layer)``."""
    wrong = []
    for name, deps in sorted(graph.items()):
        for dep in sorted(deps):
            mine, theirs = layer_of(name), layer_of(dep)
            if mine is None or theirs is None or (mine != theirs and LEVEL[theirs] >= LEVEL[mine]):
                wrong.append(f"{name} ({mine}) -> {dep} ({theirs})")
    return wrong


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_every_module_is_read_and_belongs_to_a_layer(graph) -> None:
    assert {"nni_bio.core.rule", "nni_bio.nas.mutables", "nni_bio.train.training", "nni_bio.launch.experiment",
            "nni_bio.evaluate.robustness", "nni_bio.study.stages", "nni_bio.commands.search", "nni_bio.trial",
            "nni_bio.search_spaces.darts_net", "nni_bio.strategies.oneshot.trial", "nni_bio.data.cifar"} <= set(graph)
    files = {p for p in PACKAGE.rglob("*.py") if not p.relative_to(PACKAGE).parts[0] in ("search_spaces", "strategies")}
    assert files <= {path for path, _ in all_modules().values()}
    outside = sorted(name for name in graph if layer_of(name) is None)
    assert not outside, f"modules in no layer (put them in a layer's folder, or name them in TOP_LEVEL): {outside}"


def test_no_import_points_up(graph) -> None:
    wrong = upward_imports(graph)
    order = " < ".join("/".join(layers) for layers in LEVELS)
    assert not wrong, f"imports against the layer order {order}:\n" + "\n".join(wrong)


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of modules that import each other, directly or around a cycle (strongly connected
    components of more than one module), each with one of its cycles first."""
    reach = {node: _reachable(graph, node) for node in graph}
    groups, seen = [], set()
    for node in sorted(graph):
        if node in seen or node not in reach[node]:
            continue
        group = sorted(other for other in reach[node] if node in reach.get(other, ()))
        seen |= set(group)
        groups.append(group)
    return groups


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    found, todo = set(), list(graph.get(start, ()))
    while todo:
        node = todo.pop()
        if node not in found:
            found.add(node)
            todo.extend(graph.get(node, ()))
    return found


def test_no_import_cycle(graph) -> None:
    groups = tangles(graph)
    lines = [" -> ".join(find_cycle({n: graph[n] & set(g) for n in g}) or g) for g in groups]
    assert not groups, "import cycles:\n" + "\n".join(lines)


def test_nni_stays_in_the_integration_layers() -> None:
    wrong = {}
    for name, (path, package) in all_modules().items():
        names = imported_names(path, name, package)
        nni = sorted(n for n in names if n == "nni" or n.startswith("nni."))
        if nni and (layer_of(name) in NNI_FREE or name in ("nni_bio.nas.candidates", "nni_bio.nas.ops",
                                                             "nni_bio.nas.fixed_models")):
            wrong[name] = nni
    assert not wrong, f"NNI imported by the rule core, the rules, the data sets or a pure-PyTorch nas module: {wrong}"


def test_entry_points_and_aliases_are_imported_only_from_above(graph) -> None:
    may_import_trials = {"launch", "study", "commands"}
    wrong = {name: sorted(deps & ENTRY_POINTS) for name, deps in graph.items()
             if deps & ENTRY_POINTS and not (layer_of(name) in may_import_trials and not deps & {"nni_bio.cli"})
             and name not in ("nni_bio.__main__", "nni_bio.cli") and not name.startswith("nni_bio.commands.")}
    assert not wrong, f"library modules importing an entry point: {wrong}"
    users = {name: sorted(deps & ALIASES) for name, deps in graph.items() if deps & ALIASES}
    assert not users, f"nni-bio itself imports the 0.1 aliases (import nni_bio.core.* instead): {users}"


def test_the_rule_core_reads_one_way(graph) -> None:
    """Layers, then the contract and builders (rule.py), then the registry, then the error bus and swap."""
    assert graph["nni_bio.core.layers"] <= {"nni_bio.core.errors"}  # layers know no rule module, and no names
    assert "nni_bio.core.layers" in graph["nni_bio.core.rule"]
    assert "nni_bio.core._registry" not in graph["nni_bio.core.rule"] | graph["nni_bio.core.error_bus"]
    for name, deps in graph.items():
        if name.startswith("nni_bio.rules."):
            assert "nni_bio.core._registry" not in deps, name  # a rule file needs no name lookups


def test_no_core_module_shares_a_name_with_a_rule_file() -> None:
    core = {p.stem for p in (PACKAGE / "core").glob("*.py")} | {p.stem for p in PACKAGE.glob("*.py")}
    rules = {p.stem for p in (PACKAGE / "rules").glob("*.py")} - {"__init__"}
    assert not core & rules, f"a core module and nni_bio/rules/<name>.py share a name: {sorted(core & rules)}"


def test_the_checks_find_function_level_imports_cycles_and_upward_imports(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text("from nni_bio import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from nni_bio.a import x\n")
    (tmp_path / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from nni_bio.a import y\n")
    known = {"nni_bio", "nni_bio.a", "nni_bio.b", "nni_bio.c"}
    assert resolve(imported_names(tmp_path / "a.py", "nni_bio.a"), known) == {"nni_bio.b"}
    assert resolve(imported_names(tmp_path / "b.py", "nni_bio.b"), known) == {"nni_bio.a"}
    assert resolve(imported_names(tmp_path / "c.py", "nni_bio.c"), known) == set()
    assert find_cycle({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == ["a", "b", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None
    assert tangles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}) == \
        [["a", "b", "c"], ["d", "e"]]
    assert upward_imports({"nni_bio.core.rule": {"nni_bio.train.training"}}) == \
        ["nni_bio.core.rule (core) -> nni_bio.train.training (train)"]
    assert upward_imports({"nni_bio.launch.preflight": {"nni_bio.evaluate.robustness"}})  # siblings
    assert not upward_imports({"nni_bio.study.stages": {"nni_bio.launch.experiment", "nni_bio.core.errors"}})
