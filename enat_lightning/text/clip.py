"""A frozen CLIP text encoder from local ``transformers`` weights (the U-ViT MS-COCO setup, §5).

U-ViT's ``FrozenCLIPEmbedder`` uses openai/clip-vit-large-patch14: captions padded/truncated to 77
tokens, the last hidden state (77 x 768) as the embedding. Put such a model (``config.json``,
``model.safetensors`` or ``pytorch_model.bin``, and the tokenizer files) in a directory, e.g. with
``CLIPTextModel.save_pretrained(DIR)`` + ``CLIPTokenizer.save_pretrained(DIR)`` on a machine that
has it. Nothing is ever downloaded here (``local_files_only=True``). Needs the ``[t2i]`` extra.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from enat_lightning.errors import MissingInput


def _weights_digest(path: Path) -> str | None:
    """sha256 prefix of the first weight file (for the manifest), hashing at most its first 64 MiB."""
    for name in ("model.safetensors", "pytorch_model.bin"):
        f = path / name
        if f.is_file():
            h = hashlib.sha256()
            with open(f, "rb") as fh:
                h.update(fh.read(64 << 20))
            return f"{name}:{h.hexdigest()[:16]}"
    return None


class CLIPTextEncoder:
    """Captions -> (N, 77, 768) last-hidden-state embeddings and attention masks, on ``device``."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", max_length: int | None = None):
        self.path = Path(path)
        if not str(path) or not self.path.is_dir():
            raise MissingInput(f"CLIP text-encoder weights directory {str(path)!r} does not exist; it must "
                                    f"hold a transformers CLIPTextModel (config.json + weights) and its "
                                    f"tokenizer files (nothing is downloaded)")
        if not (self.path / "config.json").is_file():
            raise MissingInput(f"{self.path / 'config.json'} is missing: {self.path} is not a saved "
                                    f"transformers CLIP text model")
        try:
            from transformers import CLIPTextModel, CLIPTokenizer
        except ImportError as e:
            raise ImportError("the CLIP text encoder needs the 't2i' extra: pip install 'enat-lightning[t2i]' "
                              "(transformers)") from e
        try:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.model = CLIPTextModel.from_pretrained(str(self.path), local_files_only=True)
        except OSError as e:
            raise MissingInput(f"cannot load a CLIP text model from {self.path}: {e}") from e
        self.model.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.length = int(max_length or self.model.config.max_position_embeddings)
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(captions, str):
            raise TypeError("encode takes a list of captions, not a single string")
        batch = self.tokenizer(list(captions), padding="max_length", max_length=self.length, truncation=True,
                               return_tensors="pt")
        ids = batch["input_ids"].to(self.device)  # (N, T)
        # Like U-ViT's FrozenCLIPEmbedder, no attention mask inside CLIP (its causal mask already
        # keeps real tokens from reading the padding); the mask is returned for the generator.
        emb = self.model(input_ids=ids).last_hidden_state  # (N, T, Dt)
        return emb.float(), batch["attention_mask"].to(self.device).bool()

    def identity(self) -> dict:
        return {"kind": "clip", "path": str(self.path.resolve()), "dim": self.dim, "length": self.length,
                "name": getattr(self.model.config, "_name_or_path", ""), "weights": _weights_digest(self.path)}
