"""The house rules, checked on the package's source (issue 20: "done when").

* no import cycle in `evalrun` (every `import`/`from` statement, those inside functions too;
  imports under `if TYPE_CHECKING:` are left out: they never run);
* no raw SQL outside `evalrun/store/` (the store has named methods for what the rest needs);
* no function above radon cyclomatic complexity 20 (radon's grade C and better);
* no module above 600 lines.

`evalrun/__init__.py`'s `__all__` (sorted, complete) is checked by tests/test_public_api.py.

KNOWN_* below list what broke a rule on the day the rule came in, each under the engineer fixing
it in parallel. Nothing else is allowed; an entry that no longer offends fails too, so the lists
only shrink. The coordinator empties them as the branches land.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import grimp
from radon.complexity import cc_visit
from radon.visitors import Class, Function

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "evalrun"
MAX_COMPLEXITY = 20
MAX_LINES = 600

# Import cycles (strongly connected sets of modules). None on main since the reporttrust, viewer
# and datasets merges (the reports/ and results/ circles are gone).
KNOWN_CYCLES: list[frozenset[str]] = []

# SQL string literals outside evalrun/store/, per module (at most this many).
KNOWN_SQL: dict[str, int] = {}

# Functions above complexity 20, by "module:qualified name".
KNOWN_COMPLEX: set[str] = set()

# Modules above 600 lines. None since runner.py and run_store.py were split.
KNOWN_LONG: set[str] = set()

# A statement's shape, not a word. "SELECT ... FROM" in capitals, or in lower case followed by a
# clause ("Select a model from the list" is English); the other statements in either case.
SQL = re.compile(
    r"(?-i:\bSELECT\b[^;]*?\bFROM\b)|(?-i:\bselect\b[^;]*?\bfrom\s+\w+\s*(?:$|\b(?:where|join|order|group|limit)\b))"
    r"|\bINSERT\s+(?:OR\s+\w+\s+)?INTO\b|\bUPDATE\s+\w+\s+SET\b|\bDELETE\s+FROM\b"
    r"|\b(?:CREATE|DROP|ALTER)\s+(?:TEMP(?:ORARY)?\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b|\bPRAGMA\s+\w+",
    re.IGNORECASE | re.DOTALL,
)


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _stale(known: object, found: object) -> str:
    return f"{known} no longer offends: take it off the list in tests/test_structure.py ({found})"


# -- import cycles ---------------------------------------------------------------------------


def strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a module importing
    itself), each sorted; iterative, so a deep import chain cannot hit the recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(edges):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(edges.get(target, ())))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def _import_graph() -> grimp.ImportGraph:
    # cache_dir=None: grimp would otherwise write a cache into the working directory.
    return grimp.build_graph("evalrun", exclude_type_checking_imports=True, cache_dir=None)


def _describe(graph: grimp.ImportGraph, cycle: list[str]) -> str:
    lines = []
    for importer in cycle:
        for imported in cycle:
            for detail in graph.get_import_details(importer=importer, imported=imported):
                lines.append(f"    {importer}:{detail['line_number']}  {detail['line_contents']}")
    return "  " + " <-> ".join(cycle) + "\n" + "\n".join(lines)


def test_strongly_connected_finds_cycles_and_only_cycles() -> None:
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert strongly_connected(edges) == [["a", "b", "c"], ["e"]]
    chain = {str(i): {str(i + 1)} for i in range(5000)} | {"5000": {"0"}}  # deeper than recursion allows
    assert len(strongly_connected(chain)[0]) == 5001


def test_no_import_cycle() -> None:
    graph = _import_graph()
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
    assert "evalrun.results.stats" in edges  # the graph is the package's, not an empty one
    cycles = strongly_connected(edges)
    new = [c for c in cycles if frozenset(c) not in KNOWN_CYCLES]
    assert not new, "import cycles in evalrun (no module may import, even inside a function, one that imports it back):\n" + (
        "\n".join(_describe(graph, c) for c in new)
    )
    stale = [sorted(k) for k in KNOWN_CYCLES if k not in {frozenset(c) for c in cycles}]
    assert not stale, _stale(stale, cycles)


# -- SQL outside the store -------------------------------------------------------------------


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal (f-strings too, docstrings not) that reads as SQL."""
    tree = ast.parse(source)
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    found = []
    parts_of_fstrings = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) in docstrings or id(node) in parts_of_fstrings:
                continue
            text = node.value
        else:
            continue
        if SQL.search(str(text)):
            found.append((node.lineno, " ".join(str(text).split())[:90]))
    return sorted(found)


def test_the_sql_pattern_reads_statements_not_words() -> None:
    source = '''
"""Select the rows from the store."""
a = "SELECT count(*) FROM cells"
b = f"insert or replace into {table} VALUES (?)"
c = "update meta set value = ?"
d = "Select a model from the list, then update it"
e = "create table if not exists x (a)"
g = "select key from responses where status = 'ok'"
'''
    assert [line for line, _ in sql_literals(source)] == [3, 4, 5, 7, 8]


def test_no_sql_outside_the_store() -> None:
    found: dict[str, list[tuple[int, str]]] = {}
    for path in _modules():
        if path.relative_to(PACKAGE).parts[0] == "store":
            continue
        literals = sql_literals(path.read_text(encoding="utf-8"))
        if literals:
            found[_name(path)] = literals
    over = {
        module: literals for module, literals in found.items() if len(literals) > KNOWN_SQL.get(module, 0)
    }
    assert not over, "SQL outside evalrun/store/ (add a named method on the store instead):\n" + "\n".join(
        f"  {module}:{line}  {text}" for module, literals in over.items() for line, text in literals
    )
    stale = {m: n for m, n in KNOWN_SQL.items() if len(found.get(m, [])) < n}
    assert not stale, _stale(stale, {m: len(v) for m, v in found.items()})


# -- complexity and length -------------------------------------------------------------------


def _functions(blocks: list[Function | Class], outer: str = "") -> Iterator[tuple[str, Function]]:
    """(qualified name, function) of every function, method and closure, nested ones too."""
    for block in blocks:
        if isinstance(block, Class):
            yield from _functions(list(block.methods) + list(block.inner_classes), f"{outer}{block.name}.")
        elif not (block.is_method and not outer):  # cc_visit lists methods twice: alone and in their class
            name = outer + block.name
            yield name, block
            yield from _functions(list(block.closures), f"{name}.")


def complexities() -> dict[str, int]:
    """Every function, method and closure of the package: "module:qualified name" -> complexity."""
    out: dict[str, int] = {}
    for path in _modules():
        for name, function in _functions(cc_visit(path.read_text(encoding="utf-8"))):
            key = f"{_name(path)}:{name}"
            out[key] = max(out.get(key, 0), function.complexity)
    return out


def test_no_function_above_complexity_20() -> None:
    measured = complexities()
    assert "evalrun/results/stats.py:paired_compare" in measured  # radon saw the package
    over = {k: v for k, v in measured.items() if v > MAX_COMPLEXITY}
    new = {k: v for k, v in over.items() if k not in KNOWN_COMPLEX}
    assert not new, f"functions above radon complexity {MAX_COMPLEXITY} (split them):\n" + "\n".join(
        f"  {k}  {v}" for k, v in sorted(new.items())
    )
    stale = sorted(KNOWN_COMPLEX - set(over))
    assert not stale, _stale(stale, "now at most 20 or gone")


def test_no_module_above_600_lines() -> None:
    lengths = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    over = {m: n for m, n in lengths.items() if n > MAX_LINES}
    new = {m: n for m, n in over.items() if m not in KNOWN_LONG}
    assert not new, f"modules above {MAX_LINES} lines (split them by what they do):\n" + "\n".join(
        f"  {m}  {n}" for m, n in sorted(new.items())
    )
    stale = sorted(KNOWN_LONG - set(over))
    assert not stale, _stale(stale, {m: lengths.get(m) for m in stale})
