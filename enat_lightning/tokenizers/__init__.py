"""Image tokenizers: the MaskGIT VQGAN and the demo patch-VQ (pure torch)."""
from .base import Tokenizer

__all__ = ["Tokenizer"]
