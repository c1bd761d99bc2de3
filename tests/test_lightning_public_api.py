"""Lightning only through its public API: no ``_``-prefixed attribute of a Lightning object is read, and no
class of ours overrides a private method of a Lightning base class (each breaks on a minor release)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

PACKAGE = Path(__file__).resolve().parents[1] / "enat_lightning"
# names that hold Lightning objects in our code: any `_x` attribute read on them is private API
LIGHTNING_NAMES = re.compile(r"\b(trainer|pl_module|fit_loop|strategy|logger_connector|accelerator|lightning_module)"
                             r"\._[a-zA-Z]\w*")


def _lightning_private_names() -> set[str]:
    """`_x` attributes and methods Lightning's own base classes define (class and instance level)."""
    names = set()
    for obj in (pl.LightningModule(), pl.LightningDataModule(), Callback()):
        names |= {n for n in dir(obj) if n.startswith("_") and not n.startswith("__")}
    names |= {n for n in dir(LightningCLI) if n.startswith("_") and not n.startswith("__")}
    return names


def test_no_private_attribute_of_a_lightning_object_is_used():
    private = _lightning_private_names()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text()
        if "lightning" not in text:
            continue
        rel = path.relative_to(PACKAGE.parent)
        offenders += [f"{rel}: {m.group(0)}" for m in LIGHTNING_NAMES.finditer(text)]
        tree = ast.parse(text)
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.bases):
            for node in ast.walk(cls):
                # self._x where _x belongs to the Lightning base (e.g. self._trainer, self._device_mesh)
                if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                        and node.value.id == "self" and node.attr in private):
                    offenders.append(f"{rel}:{node.lineno}: {cls.name} uses self.{node.attr}")
                # overriding a private Lightning method
                if isinstance(node, ast.FunctionDef) and node in cls.body and node.name in private:
                    offenders.append(f"{rel}:{node.lineno}: {cls.name} overrides {node.name}")
    assert not offenders, "private Lightning API used:\n" + "\n".join(offenders)


def test_the_check_sees_a_private_use(tmp_path):
    """The pattern and the name list catch what they must (the test above can fail)."""
    assert LIGHTNING_NAMES.search("if trainer._logger_connector.should_update_logs:")
    assert LIGHTNING_NAMES.search("trainer.fit_loop._should_accumulate()")
    private = _lightning_private_names()
    assert {"_trainer", "_device_mesh"} <= private
