"""A fresh clone is self-contained: the fixtures are in the repository and no test reads outside it."""
from __future__ import annotations

import hashlib
import re

from enat_testing import FIXTURES, REPO

EXPECTED = {
    "official_enat_tiny.pt": "85bca731c76fa512aed6bb5ca682eed1690e462e8a92d584a9c1cddbe015c51c",
    "official_vqgan_tiny.pt": "4b05f7c567585d2996df72875296b84f18b1207561ed70f821c7281a304fdff5",
    "llamagen_vq_tiny.safetensors": "92cbe8c124c43d873390944ef6dddb44f707eb0c02eca59c8f9df4b0c185c75f",
    "llamagen_vq16_layout.json": "f2c68a8b46e2d3475318fba4ee04f9ebb7f306ee140fe1604f7d02c2cfc53cd5",
}


def test_fixtures_live_in_the_repository_unchanged():
    assert FIXTURES.resolve().is_relative_to(REPO.resolve())
    for name, digest in EXPECTED.items():
        path = FIXTURES / name
        assert path.is_file(), f"{path} missing"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"{path} differs from the official fixture"
    assert (FIXTURES / "README.md").is_file()


def test_no_test_reads_outside_the_repository():
    outside = re.compile(r"""(\.\./shared|REPO\.parent\b|["']/work/)""")
    offenders = []
    for path in (REPO / "tests").rglob("*.py"):
        if path.name == "test_self_contained.py":
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if outside.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "tests reaching outside the repository:\n" + "\n".join(offenders)
