"""Token shards: format, writer, streaming reader, LightningDataModule, tokenization, demo data.

``format``/``writer``/``reader``/``tokenize``/``demo`` import no Lightning; only ``datamodule`` does,
and it is imported lazily here so ``enat tokenize`` starts fast.
"""
from .format import FORMAT_VERSION, BadDataError, Manifest, Sample, ShardInfo
from .reader import resolve_manifest
from .writer import ShardSetWriter

__all__ = ["FORMAT_VERSION", "BadDataError", "DemoPaths", "Manifest", "Sample", "ShardInfo", "ShardSetWriter",
           "TokenShardDataModule", "ensure_demo_data", "resolve_manifest"]


def __getattr__(name: str):
    if name == "TokenShardDataModule":
        from .datamodule import TokenShardDataModule

        return TokenShardDataModule
    if name in ("DemoPaths", "ensure_demo_data"):
        from . import demo

        return getattr(demo, name)
    raise AttributeError(name)
