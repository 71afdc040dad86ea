"""``gpt2_common`` has no import cycles: every module imports in a fresh interpreter, and the graph
of imports among its modules (all of them, function-level ones included, read with ``ast``) has no
cycle (a lazy import that closes a cycle only hides it until someone moves the import)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "gpt2_common"


def modules():
    """``{dotted name: path}`` of every module of the package (packages by their ``__init__``)."""
    out = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def import_graph(mods):
    """``{module: set of package modules it imports}`` (``from .x import y`` counts as ``x.y`` when
    that is a module, else as ``x``)."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            else:
                continue
            edges.update(t for t in targets if t in mods and t != name)
        graph[name] = edges
    return graph


def find_cycle(graph):
    """One cycle of ``graph`` as a list of modules (first repeated last), or ``None``."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = import_graph(modules())
    assert "gpt2_common.constants" in graph["gpt2_common.gltr"]
    assert "gpt2_common.research" in graph["gpt2_common.gltr"]
    assert "gpt2_common.cli.errors" in graph["gpt2_common.cli.models"]


def test_no_import_cycles():
    cycle = find_cycle(import_graph(modules()))
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_each_module_imports_alone():
    """Each module in a fresh interpreter (one subprocess; the package's modules are dropped
    from ``sys.modules`` before each import, so no import order hides a cycle)."""
    code = (f"import sys, importlib; sys.path.insert(0, {str(SRC)!r})\n"
            f"for name in {sorted(modules())!r}:\n"
            f"    for m in [m for m in sys.modules if m == {PACKAGE!r} or m.startswith({PACKAGE + '.'!r})]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module(name)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
