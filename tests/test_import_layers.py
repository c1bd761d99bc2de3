"""Imports point down: no import cycle between the package's modules, and the pure-torch layers import no
Lightning and nothing above them (the layering of the developers' guide)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "enat_lightning"

# The layers, bottom first: a module may import its own layer or lower ones only.
LAYERS = [
    {"errors", "fileio", "seeding", "quiet", "devices", "config_files", "image_sets", "signals", "lr_schedule"},
    {"models", "tokenizers", "masking", "sampling", "text"},
    {"data", "evaluation"},
    {"sharding", "checkpointing"},
    {"module", "tokenizer_training", "callbacks", "training_cli", "training_config", "prediction", "analysis"},
    {"studies", "demo"},  # the demo as a whole: it registers its data sets and feature network below, from above
    {"commands", "app"},
    {"cli", "__main__"},
]
PURE_TORCH = ("models", "tokenizers", "sampling", "masking")

# The one upward import allowed: an entry point loading a package above for its registrations only (a bare
# ``import X`` whose names are unused). `enat fit`, or run_lightning_cli called from Python, with ``feature: demo`` or
# ``ref_stats: demo:val`` needs the demo's feature network registered before the config is parsed.
REGISTRATION_LOADS = {("enat_lightning.training_cli", "enat_lightning.demo.classifier")}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULE_STRING = re.compile(r"^enat_lightning(\.\w+)+(:\w+)?$")


def _string_imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Imports written as strings: ``importlib.import_module("x")`` / ``import_module(f"pkg.{name}")`` (every
    module under ``pkg``), ``__import__("x")`` and ``"enat_lightning.x.y:function"`` tables."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE_STRING.match(node.value):
            found.add(node.value.split(":")[0])
        if isinstance(node, ast.Call) and node.args and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))):
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
            elif isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.Constant):
                prefix = str(arg.values[0].value)
                found |= {m for m in modules if m.startswith(prefix)}
    return found


def _imports(path: Path, modules: set[str] = frozenset()) -> set[str]:
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    return _tree_imports(ast.parse(path.read_text()), package, modules)


def _tree_imports(tree: ast.AST, package: str, modules: set[str] = frozenset()) -> set[str]:
    """Every import of a module's syntax tree, at any depth: module level, inside functions (lazy imports)
    and under ``if TYPE_CHECKING``, plus the string imports."""
    found = _string_imports(tree, modules)
    for node in ast.walk(tree):
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
    return {name: {m for m in _imports(p, set(files)) if m in files and m != name} for name, p in files.items()}


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


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if a != "enat_lightning" and b != "enat_lightning" and not a.endswith("__main__")  # entry points
                  and (a, b) not in REGISTRATION_LOADS and _layer(b) > _layer(a))


def test_imports_point_down(graph):
    upward = _upward(graph)
    assert not upward, "imports pointing up the layers:\n" + "\n".join(upward)


def test_lazy_imports_of_the_demo_are_upward():
    """A function-level ``from enat_lightning.demo... import`` in analysis/ (the demo's data reached from below)
    is seen and refused: lower packages reach the demo only through registries it fills from above."""
    tree = ast.parse("def default_data(cfg):\n"
                     "    from enat_lightning.demo.data import dataset_for\n"
                     "    return dataset_for(cfg)\n")
    modules = {"enat_lightning.demo.data", "enat_lightning.analysis.attention_removal"}
    found = {m for m in _tree_imports(tree, "enat_lightning.analysis", modules) if m in modules}
    assert found == {"enat_lightning.demo.data"}
    assert _upward({"enat_lightning.analysis.attention_removal": found}) == [
        "enat_lightning.analysis.attention_removal -> enat_lightning.demo.data"]


def test_pure_torch_layers_import_no_lightning():
    offenders = []
    for top in PURE_TORCH:
        paths = [PACKAGE / f"{top}.py"] if (PACKAGE / f"{top}.py").exists() else list((PACKAGE / top).rglob("*.py"))
        for path in paths:
            if any(m == "lightning" or m.startswith(("lightning.", "pytorch_lightning")) for m in _imports(path)):
                offenders.append(str(path.relative_to(PACKAGE.parent)))
    assert not offenders, f"pure-torch modules importing Lightning: {offenders}"


def test_string_imports_are_seen():
    """The graph includes imports by name in strings: a "module:function" table or import_module(...)."""
    tree = ast.parse('T = {"demo": "enat_lightning.demo.classifier:load"}\n'
                     'importlib.import_module(f"enat_lightning.commands.{name}")\n'
                     'import_module("enat_lightning.studies.study")')
    mods = {"enat_lightning.commands.sample", "enat_lightning.commands.models", "enat_lightning.models"}
    assert _string_imports(tree, mods) == {"enat_lightning.demo.classifier", "enat_lightning.commands.sample",
                                           "enat_lightning.commands.models", "enat_lightning.studies.study"}


def test_lightning_tips_are_silenced_once_for_the_package():
    """Importing enat_lightning filters Lightning's "💡 Tip" adverts (litlogger/litmodels) from every command."""
    import subprocess
    import sys

    code = ("import logging, enat_lightning; from lightning.pytorch.utilities.rank_zero import rank_zero_info; "
            "logging.basicConfig(level=logging.INFO); rank_zero_info('💡 Tip: try litlogger'); "
            "rank_zero_info('kept message')")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stderr
    assert "kept message" in err and "Tip" not in err, err


def test_one_torch_load():
    """sampling/checkpoint.py::read_torch_file is the one reader of torch files (safe, one-line errors)."""
    pattern = re.compile(r"\btorch\.load\(")
    offenders = [str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                 if pattern.search(p.read_text()) and p != PACKAGE / "sampling" / "checkpoint.py"]
    assert not offenders, f"torch.load outside sampling/checkpoint.py: {offenders}"
