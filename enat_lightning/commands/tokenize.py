"""`enat tokenize`: images -> token shards (imagefolder | list), or build the embedded demo data."""
from __future__ import annotations

HELP = "tokenize images into webdataset token shards (imagefolder | list | coco | demo)"


def _common(p) -> None:
    p.add_argument("--resolution", type=int, default=256, help="image side after the ADM centre crop")
    p.add_argument("--tokenizer", required=True,
                   help="tokenizer spec: 'demo', 'demo:PATH.npz', or a VQGAN spec (see enat_lightning.tokenizers)")
    p.add_argument("--out", required=True, help="output shard directory (an interrupted run here resumes)")
    p.add_argument("--shard-size", type=int, default=1000, help="samples per shard")
    p.add_argument("--batch-size", type=int, default=64, help="images per tokenizer call")
    p.add_argument("--no-flip", action="store_true", help="do not store h-flipped token ids")
    p.add_argument("--device", default=None, help="move a torch-module tokenizer here (e.g. cuda)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    f = sub.add_parser("imagefolder", help="ROOT/<class>/<image>; label = sorted class index",
                       description="tokenize an ImageFolder tree (labels as torchvision's ImageFolder)")
    f.add_argument("--root", required=True, help="image folder root (one sub-directory per class)")
    _common(f)
    lst = sub.add_parser("list", help="a TSV of 'image path<TAB>label' lines",
                         description="tokenize the images of a TSV list (relative paths: relative to the list)")
    lst.add_argument("--list", required=True, dest="list_file", help="TSV file: image path<TAB>label")
    lst.add_argument("--num-classes", type=int, default=None, help="default: max label + 1")
    _common(lst)
    c = sub.add_parser("coco", help="MS-COCO images + captions json -> text shards (every caption embedded)",
                       description="tokenize COCO images and embed all captions of each image "
                                   "(enat_lightning/data/coco.py)")
    c.add_argument("--images", required=True, help="image directory, e.g. train2014/")
    c.add_argument("--captions", required=True, help="captions json, e.g. annotations/captions_train2014.json")
    c.add_argument("--text-encoder", default=None,
                   help="'clip:DIR' or DIR (a local transformers CLIP text model; extra [t2i]), or "
                        "'hash[:dim=..,length=..]' (test double)")
    c.add_argument("--embeddings", default=None,
                   help="instead of --text-encoder: precomputed .npy (N_annotations, T, Dt), row i = annotations[i]")
    c.add_argument("--embeddings-mask", default=None, help=".npy (N_annotations, T) bool (default: all True)")
    c.add_argument("--null-embedding", default=None, help=".npy (T, Dt): the empty caption's embedding (CFG null)")
    c.add_argument("--null-mask", default=None, help=".npy (T,) bool mask of --null-embedding")
    c.add_argument("--limit", type=int, default=None, help="only the first N images (by image id)")
    _common(c)
    d = sub.add_parser("demo", help="build the embedded demo tokenizer + shards (sklearn digits)",
                       description="build data/demo/tokenizer.npz and data/demo/shards/{train,val}")
    d.add_argument("--out", default=None, help="demo directory (default: data/demo of the checkout)")
    d.add_argument("--force", action="store_true", help="refit the tokenizer and rewrite the shards")


def run(args) -> int:
    if args.source == "demo":
        from enat_lightning.data.demo import build_demo_data

        paths = build_demo_data(args.out, force=args.force)
        print(f"demo tokenizer: {paths.tokenizer}\ntrain shards:   {paths.train}\nval shards:     {paths.val}")
        return 0

    from enat_lightning.data import tokenize as T

    tok = T.resolve_tokenizer(args.tokenizer)
    if args.device is not None and hasattr(tok, "to"):
        tok = tok.to(args.device)
    kw = dict(shard_size=args.shard_size, batch_size=args.batch_size, flip=not args.no_flip,
              progress=not args.no_progress)
    if args.source == "coco":
        from enat_lightning.data.coco import tokenize_coco
        from enat_lightning.text import build_text_encoder

        enc = None if args.text_encoder is None else build_text_encoder(args.text_encoder, args.device or "cpu")
        res = tokenize_coco(args.images, args.captions, tok, args.out, args.resolution, text_encoder=enc,
                            embeddings=args.embeddings, embeddings_mask=args.embeddings_mask,
                            null_embedding=args.null_embedding, null_mask=args.null_mask, limit=args.limit, **kw)
    elif args.source == "imagefolder":
        res = T.tokenize_imagefolder(args.root, tok, args.out, args.resolution, **kw)
    else:
        res = T.tokenize_list(args.list_file, tok, args.out, args.resolution, num_classes=args.num_classes, **kw)
    m = res.manifest
    resumed = (", already finished: nothing to do" if res.already_complete else
               f", resumed after {res.resumed_from} finished shards" if res.resumed_from else "")
    print(f"{m.sample_count} samples in {len(m.shards)} shards -> {args.out}/manifest.json "
          f"(latent {m.latent_side}x{m.latent_side}, codebook {m.codebook_size}, "
          + (f"{m.text['captions']} captions of {m.text['max_len']}x{m.text['dim']} ({m.text['encoder']})"
             if m.text else f"{m.num_classes} classes") + f"{resumed})")
    if res.unreadable:
        print(f"skipped {len(res.unreadable)} unreadable image(s) (paths listed above)")
    return 0
