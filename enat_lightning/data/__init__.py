"""Token shards: format, writer, streaming reader, LightningDataModule, tokenization.

``format``/``writer``/``reader``/``tokenize`` import no Lightning; only ``datamodule`` does,
and it is imported lazily here so ``enat tokenize`` starts fast.
"""
from .format import FORMAT_VERSION, BadDataError, Manifest, Sample, ShardInfo
from .reader import resolve_manifest
from .writer import ShardSetWriter

__all__ = ["FORMAT_VERSION", "BadDataError", "Manifest", "Sample", "ShardInfo", "ShardSetWriter",
           "TokenShardDataModule", "resolve_manifest"]


def __getattr__(name: str):
    if name == "TokenShardDataModule":
        from .datamodule import TokenShardDataModule

        return TokenShardDataModule
    raise AttributeError(name)
