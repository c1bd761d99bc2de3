"""MS-COCO captions + images -> text token shards (paper §5; the U-ViT COCO protocol).

Each sample is one image: its VQ token grid (+ flipped grid) and the embeddings of *all* its
captions, ``text.npy`` float16 (N, T, Dt) and ``text_mask.npy`` bool (N, T); the reader picks one
caption at random per step. The manifest's ``text`` entry records the encoder and its width and
length, and carries the empty caption's embedding (the CFG null condition) so a model trained on
the shards can read it from there (``configure_text_model``):

  {"encoder": "clip" | "hash" | "precomputed", "max_len": T, "dim": Dt, "identity": {...},
   "null_text": base64 of a float16 (T, Dt) .npy, "null_mask": [0/1 x T], "captions": N total}

Caption embeddings come from a ``TextEncoder`` (``enat_lightning.text``) or from precomputed
arrays: ``embeddings.npy`` (N_ann, T, Dt) whose row i belongs to ``annotations[i]`` of the
captions json, optionally ``mask.npy`` (N_ann, T) bool (default: all True) and ``null.npy``
(T, Dt) for the empty caption (+ ``null_mask.npy``); without ``null.npy`` the null condition is
"no text tokens".
"""
from __future__ import annotations

import base64
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .tokenize import TokenizeResult, tokenize_items
from enat_lightning.errors import InvalidInput, MissingInput


@dataclass
class CocoImage:
    image_id: int
    path: str
    captions: list[str]
    annotation_rows: list[int]  # indices into the json's "annotations" list


def read_coco_captions(captions_json: str | os.PathLike, images_dir: str | os.PathLike,
                       limit: int | None = None) -> list[CocoImage]:
    """COCO ``captions_*.json`` -> images that have captions, ordered by image id.

    Image files are ``images_dir/<file_name>``; a missing file is reported when it is read (and
    skipped, as any unreadable image)."""
    path = Path(captions_json)
    if not path.is_file():
        raise MissingInput(f"captions file {path} does not exist (expected e.g. "
                                f"annotations/captions_train2014.json)")
    if not Path(images_dir).is_dir():
        raise MissingInput(f"image directory {images_dir} does not exist")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise InvalidInput(f"{path}: not valid JSON ({e})") from e
    for key in ("images", "annotations"):
        if not isinstance(d.get(key), list):
            raise InvalidInput(f"{path}: missing list {key!r} (not a COCO captions file)")
    files = {}
    for n, im in enumerate(d["images"]):
        if "id" not in im or "file_name" not in im:
            raise InvalidInput(f"{path}: images[{n}] lacks 'id' or 'file_name'")
        files[int(im["id"])] = im["file_name"]
    caps: dict[int, tuple[list[str], list[int]]] = {}
    for n, ann in enumerate(d["annotations"]):
        if "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise InvalidInput(f"{path}: annotations[{n}] lacks 'image_id' or a string 'caption'")
        iid = int(ann["image_id"])
        if iid not in files:
            raise InvalidInput(f"{path}: annotations[{n}] refers to image_id {iid}, which is not in 'images'")
        c, r = caps.setdefault(iid, ([], []))
        c.append(ann["caption"].strip())
        r.append(n)
    out = [CocoImage(iid, os.path.join(str(images_dir), files[iid]), *caps[iid]) for iid in sorted(caps)]
    if not out:
        raise InvalidInput(f"{path}: no image has a caption")
    return out[:limit] if limit is not None else out


def _b64_npy(a: np.ndarray) -> str:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode()


def null_condition_from_text_info(text: dict | None, where: str = "manifest") -> tuple[np.ndarray, np.ndarray] | None:
    """The manifest's null caption -> (float32 (T, Dt), bool (T,)), or None if it has none."""
    if not text or "null_text" not in text:
        return None
    try:
        emb = np.load(io.BytesIO(base64.b64decode(text["null_text"])), allow_pickle=False).astype(np.float32)
        mask = np.asarray(text["null_mask"], dtype=bool)
    except Exception as e:
        raise InvalidInput(f"{where}: text.null_text / null_mask cannot be decoded ({e})") from e
    if emb.shape != (text["max_len"], text["dim"]) or mask.shape != (text["max_len"],):
        raise InvalidInput(f"{where}: null caption shapes {emb.shape} / {mask.shape} do not match "
                         f"max_len {text['max_len']}, dim {text['dim']}")
    return emb, mask


def check_text_fits(cfg, text: dict | None, where: str = "shards") -> None:
    """The shards' captions (manifest ``text``) must fit a text model's config (T, Dt)."""
    if text is None:
        raise InvalidInput(f"{where} hold no text (manifest 'text' is null): a text model needs "
                         f"`enat tokenize coco` shards")
    if cfg.condition != "text":
        raise InvalidInput(f"{where} hold captions: the model must be text-conditioned (condition: text), "
                         f"got condition={cfg.condition!r}")
    if (text["max_len"], text["dim"]) != (cfg.text_len, cfg.text_dim):
        raise InvalidInput(f"{where}: captions are {text['max_len']} x {text['dim']} (T x Dt) but the model has "
                         f"text_len={cfg.text_len}, text_dim={cfg.text_dim}")


def configure_text_model(model, text: dict | None, where: str = "shards") -> None:
    """Checks that a text model fits the shards' text (T, Dt) and stores their null caption in it."""
    check_text_fits(model.cfg, text, where)
    null = null_condition_from_text_info(text, where)
    if null is not None:
        model.conditioner.set_null(torch.from_numpy(null[0]), torch.from_numpy(null[1]))


class _CaptionTable:
    """Caption embeddings of image i, computed in chunks of images (encoder) or read (arrays)."""

    def __init__(self, images: list[CocoImage], encoder=None, embeddings: np.ndarray | None = None,
                 mask: np.ndarray | None = None, chunk: int = 64):
        self.images, self.encoder, self.emb, self.mask, self.chunk = images, encoder, embeddings, mask, chunk
        self._cache: dict[int, dict] = {}

    def __call__(self, i: int) -> dict:
        if self.encoder is None:
            rows = self.images[i].annotation_rows
            return {"text": np.asarray(self.emb[rows], dtype=np.float16),
                    "text_mask": np.asarray(self.mask[rows], bool)}
        if i not in self._cache:
            from enat_lightning.text import encode_in_batches

            lo = i - i % self.chunk
            group = self.images[lo:lo + self.chunk]
            emb, mask = encode_in_batches(self.encoder, [c for im in group for c in im.captions])
            self._cache, k = {}, 0
            for j, im in enumerate(group):
                n = len(im.captions)
                self._cache[lo + j] = {"text": emb[k:k + n], "text_mask": mask[k:k + n]}
                k += n
        return self._cache[i]


def load_precomputed(embeddings: str | os.PathLike, n_annotations: int, mask: str | os.PathLike | None = None,
                     null: str | os.PathLike | None = None, null_mask: str | os.PathLike | None = None):
    """Loads and checks the .npy arrays of precomputed caption embeddings (memory-mapped)."""
    def load(p):
        if not Path(p).is_file():
            raise MissingInput(f"embedding file {p} does not exist")
        return np.load(p, mmap_mode="r", allow_pickle=False)

    emb = load(embeddings)
    if emb.ndim != 3 or emb.shape[0] != n_annotations:
        raise InvalidInput(f"{embeddings}: expected shape (N_annotations={n_annotations}, T, Dt), got {emb.shape} "
                         f"(row i = annotations[i] of the captions json)")
    T, Dt = emb.shape[1:]
    m = np.ones(emb.shape[:2], bool) if mask is None else load(mask)
    if m.shape != emb.shape[:2]:
        raise InvalidInput(f"{mask}: expected shape {emb.shape[:2]}, got {m.shape}")
    null_pair = None
    if null is not None:
        ne = np.asarray(load(null), dtype=np.float32)
        nm = np.ones(T, bool) if null_mask is None else np.asarray(load(null_mask), bool)
        if ne.shape != (T, Dt) or nm.shape != (T,):
            raise InvalidInput(f"{null}: expected the empty caption's ({T}, {Dt}) embedding (and a ({T},) mask), "
                             f"got {ne.shape} / {nm.shape}")
        null_pair = (ne, nm)
    return emb, m, null_pair


def tokenize_coco(images_dir: str | os.PathLike, captions_json: str | os.PathLike, tokenizer,
                  out: str | os.PathLike, resolution: int = 256, *, text_encoder=None,
                  embeddings: str | os.PathLike | None = None, embeddings_mask: str | os.PathLike | None = None,
                  null_embedding: str | os.PathLike | None = None, null_mask: str | os.PathLike | None = None,
                  limit: int | None = None, **kw) -> TokenizeResult:
    """COCO images + captions -> text token shards under ``out`` (resumable, as ``tokenize_items``).

    Give exactly one of ``text_encoder`` (a TextEncoder) or ``embeddings`` (a .npy path, see the
    module docstring). ``kw`` goes to ``tokenize_items`` (shard_size, batch_size, flip, progress...).
    """
    if (text_encoder is None) == (embeddings is None):
        raise InvalidInput("give exactly one caption source: a text encoder (--text-encoder) or precomputed "
                         "embeddings (--embeddings)")
    images = read_coco_captions(captions_json, images_dir, limit)
    if text_encoder is not None:
        null_emb, null_m = text_encoder.encode([""])
        null = (null_emb[0].float().cpu().numpy(), null_m[0].cpu().numpy())
        T, Dt, ident = text_encoder.length, text_encoder.dim, text_encoder.identity()
        name = ident["kind"]
        table = _CaptionTable(images, encoder=text_encoder)
    else:
        n_ann = len(json.loads(Path(captions_json).read_text())["annotations"])
        emb, m, null = load_precomputed(embeddings, n_ann, embeddings_mask, null_embedding, null_mask)
        T, Dt, name = emb.shape[1], emb.shape[2], "precomputed"
        ident = {"kind": "precomputed", "embeddings": str(Path(embeddings).resolve()), "dim": int(Dt), "length": int(T)}
        table = _CaptionTable(images, embeddings=emb, mask=m)
    text = {"encoder": name, "max_len": int(T), "dim": int(Dt), "identity": ident,
            "captions": sum(len(im.captions) for im in images)}
    if null is not None:
        text["null_text"] = _b64_npy(null[0].astype(np.float16))
        text["null_mask"] = [int(v) for v in null[1]]
    items = [(im.path, 0) for im in images]
    source = {"layout": "coco", "captions": str(captions_json), "images": str(images_dir)}
    return tokenize_items(items, tokenizer, out, resolution, text=text, sample_extra=table, source=source, **kw)


def eval_prompts(shards: str, num: int, seed: int = 0, batch_size: int = 64):
    """FID-30K prompts (U-ViT protocol): one caption per image of the (val) text shards, chosen
    at random with ``seed``, for the first ``num`` images in manifest order.

    Yields (text float32 (b, T, Dt), text_mask bool (b, T)) batches; fewer than ``num`` images in
    the shards is an error."""
    import tarfile

    from .format import decode_sample

    manifest, urls, where = resolve_manifest_text(shards)
    if manifest.sample_count < num:
        raise InvalidInput(f"{where} has {manifest.sample_count} images, fewer than the {num} prompts asked for")
    g = torch.Generator().manual_seed(seed)
    texts, masks, done = [], [], 0
    for url in urls:
        with tarfile.open(url) as tar:
            groups: dict[str, dict[str, bytes]] = {}
            order = []
            for member in tar.getmembers():
                key, _, fld = member.name.partition(".")
                if key not in groups:
                    groups[key] = {}
                    order.append(key)
                groups[key][fld] = tar.extractfile(member).read()
        for key in order:
            s = decode_sample(key, groups[key], url)
            c = int(torch.randint(len(s.text), (1,), generator=g))
            texts.append(s.text[c].astype(np.float32))
            masks.append(s.text_mask[c].astype(bool))
            done += 1
            if len(texts) == batch_size or done == num:
                yield torch.from_numpy(np.stack(texts)), torch.from_numpy(np.stack(masks))
                texts, masks = [], []
            if done == num:
                return


def eval_captions(model, shards: str, num: int, seed: int = 0):
    """FID-30K: ``Captions`` of ``eval_prompts``' first ``num`` captions for the text ``model``
    (sample i is conditioned on row i).

    Embeddings are kept in float16 on the CPU (30k x 77 x 768 = 3.5 GB; each sampled chunk is moved
    to the model). The model's null caption is taken from the shards when it has none yet."""
    from enat_lightning.models import Captions

    manifest, _, where = resolve_manifest_text(shards)
    check_text_fits(model.cfg, manifest.text, where)
    from enat_lightning.text.base import check_encoder_identity

    check_encoder_identity(manifest.text.get("identity"), getattr(model, "text_encoder_identity", None),
                           f"checkpoint {getattr(model, 'checkpoint_path', '')}", what=f"the encoder of {where}")
    if not bool(model.conditioner.null_mask.any()) and null_condition_from_text_info(manifest.text, where) is not None:
        configure_text_model(model, manifest.text, where)
    texts, masks = [], []
    for t, m in eval_prompts(shards, num, seed):
        texts.append(t.half())
        masks.append(m)
    return Captions(torch.cat(texts), torch.cat(masks))


def resolve_manifest_text(shards: str):
    """resolve_manifest, refusing shards without captions."""
    from .reader import resolve_manifest

    manifest, urls, where = resolve_manifest(shards)
    if manifest.text is None:
        raise InvalidInput(f"{where} holds no captions (manifest 'text' is null): use `enat tokenize coco` shards")
    return manifest, urls, where
