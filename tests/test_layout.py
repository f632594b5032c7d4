"""The package's floors (docs/layout.md): every import points to its own floor or a lower one, no circles.

Imports are read with ``ast`` from every module of ``colora_jax``, at module level and inside
functions alike (an import hidden in a function body is still an arrow).
"""

from __future__ import annotations

import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).parents[1]
PACKAGE = ROOT / "colora_jax"

# Lowest floor first. "x.*" is the package x and everything in it; a bare name is that module alone.
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("runtime", ("colora_jax._src.runtime.*",)),
    ("model", ("colora_jax._src.model.*",)),
    ("estimators", ("colora_jax._src.estimators.*",)),
    ("algorithms", ("colora_jax._src.algorithms",)),
    ("baselines", ("colora_jax._src.baselines.*",)),
    ("methods", ("colora_jax._src.registry", "colora_jax._src.methods")),
    ("experiments", ("colora_jax._src.experiments.*", "colora_jax.statistics")),
    ("bench", ("colora_jax._src.bench.*",)),
    ("nnx", ("colora_jax.nnx.*",)),
    ("cli", ("colora_jax._src.cli.*",)),
    ("faces", ("colora_jax", "colora_jax._src", "colora_jax.cli", "colora_jax.demo", "colora_jax.plotting")),
)


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor_of(module: str) -> int | None:
    """The index in FLOORS of the floor holding ``module`` (None: no floor names it)."""
    found = []
    for index, (_, members) in enumerate(FLOORS):
        for member in members:
            if member.endswith(".*"):
                package = member[:-2]
                if module == package or module.startswith(package + "."):
                    found.append(index)
            elif module == member:
                found.append(index)
    assert len(set(found)) <= 1, f"{module} is on several floors: {[FLOORS[i][0] for i in found]}"
    return found[0] if found else None


def imports(module: str) -> set[str]:
    """The colora_jax modules ``module`` imports, anywhere in its body."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "colora_jax"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "colora_jax":
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                out.add(sub if sub in MODULES else source)
    return out


GRAPH = {m: imports(m) for m in MODULES}


def test_every_module_is_on_one_floor():
    assert [m for m in MODULES if floor_of(m) is None] == []


def test_every_import_names_a_module_of_the_package():
    assert {(m, t) for m, targets in GRAPH.items() for t in targets if t not in MODULES} == set()


def test_no_import_points_up():
    up = sorted(
        f"{m} ({FLOORS[floor_of(m)][0]}) -> {t} ({FLOORS[floor_of(t)][0]})"
        for m, targets in GRAPH.items()
        for t in targets
        if t in MODULES and floor_of(t) > floor_of(m)
    )
    assert up == []


def test_no_import_circle():
    """No module reaches itself through imports (Tarjan's strongly connected components)."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v] & MODULES.keys():
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
            if len(component) > 1 or v in GRAPH[v]:
                circles.append(sorted(component))

    for v in MODULES:
        if v not in index:
            visit(v)
    assert circles == []


def floor_drawing() -> str:
    """The floors, top first, as docs/layout.md draws them."""
    width = max(len(name) for name, _ in FLOORS)
    return "\n".join(f"{name:<{width}}  {'  '.join(members)}" for name, members in reversed(FLOORS))


def test_docs_draw_the_floors():
    docs = (ROOT / "docs" / "layout.md").read_text()
    assert floor_drawing() in docs, f"docs/layout.md's floor drawing is out of date; it is:\n{floor_drawing()}"


def _equation_rows():
    text = (ROOT / "docs" / "equations.md").read_text()
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[3].endswith(".py`"):
            yield cells[2], cells[3].strip("`")


@pytest.mark.parametrize(("functions", "module"), list(_equation_rows()), ids=lambda x: x)
def test_equations_name_functions_in_their_modules(functions, module):
    """docs/equations.md's function column names what its module column's file defines."""
    source = (PACKAGE / "_src" / module).read_text()
    for token in re.findall(r"`([^`]+)`", functions):
        if token.startswith("fit("):
            continue  # fit(algorithm=...) is the dispatch; the row's other names are in the module
        for name in re.findall(r"[A-Za-z_]\w*", token.split("(")[0].removeprefix("colora_jax.")):
            assert re.search(rf"^\s*(def|class) {name}\b|^{name}\b.*=|^\s+{name}: ", source, re.M), (name, module)
