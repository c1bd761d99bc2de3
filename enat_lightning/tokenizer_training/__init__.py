"""Training image tokenizers with ``enat fit`` (the Lightning layer over tokenizers/autoencoder.py)."""
from .losses import LossConfig
from .metrics import CodebookUsage, codebook_stats
from .module import VQTokenizerModule

__all__ = ["LossConfig", "CodebookUsage", "codebook_stats", "VQTokenizerModule"]
