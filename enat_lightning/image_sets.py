"""Named in-memory image sets (bottom layer: no imports). A package above registers a set here -- the demo
registers its embedded digits as ``demo`` (enat_lightning.demo.classifier) -- and data/images.py reads
``demo`` / ``demo:NAME`` specs through it, so no lower package imports the demo and importing the registry
loads nothing (no Lightning, no matplotlib)."""
from __future__ import annotations

# prefix -> function(name) -> (images (N, 3, H, W) in [0, 1], labels (N,), is_val (N,))
IMAGE_SETS: dict = {}


def register_image_set(prefix: str, fn) -> None:
    """Make ``PREFIX`` / ``PREFIX:NAME`` image specs read ``fn(NAME)``."""
    IMAGE_SETS[prefix] = fn
