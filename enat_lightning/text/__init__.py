"""Caption encoders for text-to-image: captions -> (N, T, Dt) token embeddings + (N, T) masks.

``CLIPTextEncoder`` runs a local ``transformers`` CLIP text model (extra ``[t2i]``, never
downloads); ``HashTextEncoder`` is a deterministic, weight-free test double. ``build_text_encoder``
turns a command-line spec into either.
"""
from .base import TextEncoder, build_text_encoder, encode_in_batches
from .clip import CLIPTextEncoder
from .hashing import HashTextEncoder
from .prompts import encode_prompts, prompts_sha1, read_prompts

__all__ = ["CLIPTextEncoder", "HashTextEncoder", "TextEncoder", "build_text_encoder", "encode_in_batches",
           "encode_prompts", "prompts_sha1", "read_prompts"]
