"""The orchestrator's shape, checked with ``ast``: no import cycle between its modules (function-level
imports and ``from . import x`` included), no ML framework outside runners/, no module over the size
limit, no long function without its reason, no private name imported across modules."""
from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "orchestrator"
FRAMEWORKS = {"torch", "torchvision", "tensorflow", "keras", "mxnet", "jax", "onnxruntime", "openvino"}
MAX_LINES = 400
MAX_FUNCTION_LINES = 60
LONG_REASON = "Long because"  # a longer function says why in its docstring, in a sentence starting so
# Over the limit, each for a reason; the list may only shrink.
TOO_LONG: dict[str, str] = {}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules(root: Path) -> dict[str, Path]:
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def resolve(current: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names (its level resolved against ``current``)."""
    if node.level == 0:
        return node.module or ""
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path, name: str, known: set[str]) -> list[tuple[str, str]]:
    """(imported module, imported name or "") for every import anywhere in the file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, "") for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = resolve(name, path.name == "__init__.py", node)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.append((sub, "") if sub in known else (target, alias.name))  # `from . import x`: module x
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    mods = modules(root)
    known = set(mods)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        for target, _ in imports_of(path, name, known):
            while target and target not in known:  # `import orchestrator.bench.plan` -> that module
                target = target.rpartition(".")[0]
            if target and target != name and target in known:
                graph[name].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    graph = import_graph(ROOT)
    # a package's __init__ that imports its submodules is fine; a submodule importing its package's
    # __init__ back would be a cycle and is caught like any other
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cycle_check_finds_a_planted_cycle(tmp_path):
    shutil.copytree(ROOT / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__"))
    assert find_cycle(import_graph(tmp_path)) is None
    stats = tmp_path / PACKAGE / "results" / "stats.py"
    stats.write_text(stats.read_text() + "\n\ndef planted():\n    from . import ranking\n")  # ranking imports stats
    cycle = find_cycle(import_graph(tmp_path))
    assert cycle is not None and {"orchestrator.results.stats", "orchestrator.results.ranking"} <= set(cycle)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Host code that may import a framework, each for a reason.
FRAMEWORK_OK = {"tests/benchmarks/seed_methods.py": "runs inside the runner images (their frameworks), not on the host"}


def host_python_files() -> list[Path]:
    skip = {"runners", ".venv", ".git", "build", "zoobench.egg-info"}
    return [p for p in ROOT.rglob("*.py") if not skip & set(p.relative_to(ROOT).parts)
            and str(p.relative_to(ROOT)) not in FRAMEWORK_OK]


def test_no_framework_import_outside_runners():
    bad = []
    for path in host_python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    assert not bad, "framework imports outside runners/: " + "; ".join(bad)


def test_no_module_over_the_size_limit():
    long = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in modules(ROOT).values()}
    over = {p: n for p, n in long.items() if n > MAX_LINES and p not in TOO_LONG}
    assert not over, f"over {MAX_LINES} lines (split them, or list them in TOO_LONG with a reason): {over}"
    assert all(long.get(p, 0) > MAX_LINES for p in TOO_LONG), "TOO_LONG lists a file that is short now: drop it"


def long_functions(root: Path) -> list[str]:
    """``path:line name (N lines)`` for every function over the limit whose docstring gives no reason."""
    found = []
    for path in sorted((root / PACKAGE).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_over_the_limit_without_a_reason():
    long = long_functions(ROOT)
    assert not long, (f"functions over {MAX_FUNCTION_LINES} lines (split them, or say why in the docstring: "
                      f"'{LONG_REASON} ...'): {long}")


def test_the_function_check_finds_a_long_function_and_accepts_a_reason(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / PACKAGE).mkdir()
    (tmp_path / PACKAGE / "a.py").write_text(f"def long():\n{body}\n")
    (tmp_path / PACKAGE / "b.py").write_text(f'def said():\n    """{LONG_REASON} it is a table."""\n{body}\n')
    assert long_functions(tmp_path) == [f"{PACKAGE}/a.py:1 long ({MAX_FUNCTION_LINES + 1} lines)"]


def test_no_private_name_imported_across_modules():
    mods = modules(ROOT)
    bad = [f"{name}: {target}.{imported}" for name, path in mods.items()
           for target, imported in imports_of(path, name, set(mods))
           if imported.startswith("_") and not imported.startswith("__")]
    assert not bad, "private names imported from another module: " + "; ".join(bad)


@pytest.mark.parametrize("path", sorted(modules(ROOT).values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_states_its_promise(path):
    if path.name == "__main__.py" or not path.read_text().strip():
        return
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path} has no module docstring"
