"""The import graph keeps its shape: no cycles, the layer contracts hold, no hidden imports.

The layer rules themselves are import-linter contracts in pyproject.toml (`.ci/test` runs
`lint-imports`); running them here too means `pytest tests/unit` catches a broken layer before
CI does. The two other rules are ones import-linter does not state the way issue 9 does:
no module may reach itself through its imports, and imports sit at the top of a module, where
readers and the import graph see them, not inside functions or `if TYPE_CHECKING:` blocks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bot", "handlers")
# The composition root may import anything; every other module is a source of some contract.
COMPOSITION_ROOT = frozenset({"bot.services", "bot.cli", "bot.wsgi"})

# Imports inside functions (or under TYPE_CHECKING) in files whose owners are reworking them
# now; each is debt of issue 9 with its fix. The test fails on a new one, and on an entry here
# that no longer exists (delete it then), so the list only shrinks.
KNOWN_HIDDEN_IMPORTS: dict[tuple[str, str], str] = {
    # README, dependency notes: adapters a web worker with Redis never builds (0.39 s, 44 MiB).
    ("bot/services.py", "bot.cluster.client"): "built on first use, not by every web worker",
    ("bot/services.py", "bot.forge.base"): "TYPE_CHECKING only: the type names above",
    ("bot/services.py", "bot.gitrepo"): "built on first use, not by every web worker",
    ("bot/services.py", "bot.forge.github"): "built on first use, not by every web worker",
    ("bot/services.py", "bot.forge.gitlab"): "built on first use, not by every web worker",
    ("bot/services.py", "fakeredis"): "embedded mode only",
    # README, dependency notes: scipy (0.8 s) only for `coalmine judge`.
    ("bot/cli.py", "bot.judge_cli"): "scipy only for coalmine judge",
    # README, dependency notes: the web app and the simulators only for `coalmine demo`.
    ("bot/cli.py", "bot.demo"): "the web app and simulators only for coalmine demo",
    ("bot/analysis/providers/kayenta.py", "bot.judge.score"):
        "scipy only in a process that measures a kayenta metric, not in every web worker",
}


def test_no_module_reaches_itself_through_its_imports() -> None:
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    cycles = [sorted(component) for component in _strongly_connected(graph) if len(component) > 1]
    assert cycles == [], "import cycles (each line: modules that import each other):\n" + "\n".join(
        ", ".join(cycle) for cycle in cycles
    )


def test_import_contracts_in_pyproject_are_kept() -> None:
    # In a child process: import-linter configures logging with dictConfig, which would disable
    # the loggers of this test process (and later caplog-based tests would see nothing).
    done = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache",
         "--config", str(ROOT / "pyproject.toml")],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_module_belongs_to_a_layer() -> None:
    """A new module must be placed in pyproject's contracts, or no rule would ever see it."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    placed = [
        source
        for contract in contracts["contracts"]
        if contract["type"] == "forbidden"
        for source in contract["source_modules"]
    ]
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    unplaced = sorted(
        module
        for module in graph.modules
        if module not in COMPOSITION_ROOT
        and not graph.find_children(module)  # a package is placed through its modules
        and not any(module == p or module.startswith(p + ".") for p in placed)
    )
    assert unplaced == [], f"add to a contract's source_modules in pyproject.toml: {unplaced}"


def test_the_core_is_forbidden_every_module_outside_it() -> None:
    """A module outside the core that the core's contract does not name could be imported by
    the core without any rule breaking."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = next(c for c in contracts["contracts"] if c["id"] == "core-is-pure")
    named = [*core["source_modules"], *core["forbidden_modules"]]
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    open_to_core = sorted(
        module for module in graph.modules
        if not graph.find_children(module)
        and not any(module == n or module.startswith(n + ".") for n in named)
    )
    assert open_to_core == [], f"add to core-is-pure's forbidden_modules: {open_to_core}"


def test_the_cycle_finder_reports_each_cycle_once() -> None:
    graph = grimp.ImportGraph()
    for importer, imported in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d"), ("e", "e")]:
        graph.add_import(importer=importer, imported=imported)
    components = _strongly_connected(graph)
    assert sorted(sorted(c) for c in components if len(c) > 1) == [["a", "b", "c"]]


def test_imports_sit_at_the_top_of_modules() -> None:
    found = {(path, module): line for path, module, line in _hidden_imports()}
    new = sorted(
        f"{path}:{line}: {module}"
        for (path, module), line in found.items()
        if (path, module) not in KNOWN_HIDDEN_IMPORTS
    )
    gone = sorted(set(KNOWN_HIDDEN_IMPORTS) - set(found))
    assert not new, (
        "imports inside a function or `if TYPE_CHECKING:`; move them to the top "
        "(and break a cycle instead of hiding it):\n" + "\n".join(new)
    )
    assert not gone, f"fixed, so delete from KNOWN_HIDDEN_IMPORTS: {gone}"


def test_the_hidden_import_scan_sees_functions_and_type_checking_blocks() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import os\n"
        "if TYPE_CHECKING:\n    from a import b\n"
        "def f():\n    import c\n"
        "class K:\n    def m(self):\n        from d.e import g\n"
    )
    assert sorted(_hidden_in(ast.parse(source))) == [("a", 4), ("c", 6), ("d.e", 9)]


def _hidden_imports() -> Iterator[tuple[str, str, int]]:
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            for module, line in _hidden_in(ast.parse(file.read_text(), str(file))):
                yield file.relative_to(ROOT).as_posix(), module, line


def _hidden_in(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(module, line) of each import below a function or an `if TYPE_CHECKING:`."""
    stack: list[tuple[ast.AST, bool]] = [(tree, False)]
    while stack:
        node, hidden = stack.pop()
        for child in ast.iter_child_nodes(node):
            if hidden and isinstance(child, ast.Import):
                yield from ((alias.name, child.lineno) for alias in child.names)
            elif hidden and isinstance(child, ast.ImportFrom):
                yield "." * child.level + (child.module or ""), child.lineno
            stack.append((child, hidden or _hides(child)))


def _hides(node: ast.AST) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return True
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's strongly connected components over the direct imports, without recursion."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            module, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append(
                        (target, iter(sorted(graph.find_modules_directly_imported_by(target))))
                    )
                elif target in on_stack:
                    low[module] = min(low[module], index[target])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == module:
                        break
                components.append(component)
    return components


def test_redis_keys_are_spelled_only_in_bot_keys() -> None:
    """Every Redis key is named in bot/keys.py and the adapters take their names from there: a
    module that spelled one itself would fork the key space that docs/contracts.md describes."""
    sources = [*sorted((ROOT / "handlers").rglob("*.py")), *sorted((ROOT / "bot").rglob("*.py"))]
    spelled = [f"{path.relative_to(ROOT)}:{number}"
               for path in sources if path != ROOT / "bot" / "keys.py"
               for number, line in enumerate(path.read_text().splitlines(), 1)
               if '"coalmine:' in line or "'coalmine:" in line]
    assert spelled == []
