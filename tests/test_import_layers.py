"""Imports point down: no import cycle between the package's modules, and the pure-torch layers import no
Lightning and nothing above them (the layering of the developers' guide)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "enat_lightning"

# The layers, bottom first: a module may import its own layer or lower ones only.
LAYERS = [
    {"errors", "fileio", "seeding"},
    {"models", "tokenizers", "masking", "sampling", "text"},
    {"data", "evaluation", "demo.data", "demo.classifier"},  # the demo's data set and feature network
    {"sharding", "checkpointing"},
    {"module", "tokenizer_training", "callbacks", "training_cli", "training_config", "prediction", "analysis"},
    {"studies", "demo"},
    {"commands"},
    {"cli", "__main__"},
]
PURE_TORCH = ("models", "tokenizers", "sampling", "masking")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in _imports(p) if m in files and m != name} for name, p in files.items()}


def _layer(module: str) -> int:
    """The layer of the longest listed name that ``module`` (without the package prefix) starts with."""
    parts = module.split(".")[1:] or [module]
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for i, layer in enumerate(LAYERS):
            if name in layer:
                return i
    raise AssertionError(f"{module}: {parts[0]!r} is in no layer of this test; add it")


def test_no_import_cycles(graph):
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_imports_point_down(graph):
    upward = [f"{a} -> {b}" for a, targets in graph.items() for b in targets
              if a != "enat_lightning" and b != "enat_lightning" and not a.endswith("__main__")  # entry points
              and _layer(b) > _layer(a)]
    assert not upward, "imports pointing up the layers:\n" + "\n".join(sorted(upward))


def test_pure_torch_layers_import_no_lightning():
    offenders = []
    for top in PURE_TORCH:
        paths = [PACKAGE / f"{top}.py"] if (PACKAGE / f"{top}.py").exists() else list((PACKAGE / top).rglob("*.py"))
        for path in paths:
            if any(m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")) for m in _imports(path)):
                offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert not offenders, f"pure-torch modules importing Lightning: {offenders}"
