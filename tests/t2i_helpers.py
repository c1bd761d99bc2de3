"""Shared helpers of the text-to-image tests: a miniature COCO (images + captions json), a tiny
patch-VQ tokenizer, shard reading."""
import json

import numpy as np
import torch

from enat_lightning.data.format import decode_sample
from enat_lightning.data.reader import resolve_manifest
from enat_lightning.tokenizers.demo import DemoTokenizer

CAPTIONS = {  # image id -> captions; image 9 has none (left out), annotations interleaved
    3: ["a red square", "something red"], 1: ["a blue sky", "blue", "a very blue picture"],
    2: ["green grass"], 7: ["a white wall", "white"],
}


def make_coco(root, sizes=((20, 24), (16, 16), (30, 18), (17, 40), (16, 16))):
    from PIL import Image

    images = root / "train2014"
    images.mkdir(parents=True)
    ids = [1, 2, 3, 7, 9]
    g = np.random.default_rng(0)
    for iid, (w, h) in zip(ids, sizes):
        Image.fromarray(g.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(images / f"COCO_{iid:012d}.png")
    anns = []
    for k in range(3):  # interleave: first captions of every image, then second ones, ...
        for iid, caps in CAPTIONS.items():
            if k < len(caps):
                anns.append({"image_id": iid, "id": 100 * iid + k, "caption": caps[k]})
    d = {"images": [{"id": i, "file_name": f"COCO_{i:012d}.png"} for i in ids], "annotations": anns}
    (root / "captions.json").write_text(json.dumps(d))
    return images, root / "captions.json", anns


def tokenizer():
    return DemoTokenizer(torch.rand(16, 16, generator=torch.Generator().manual_seed(0)), patch=4, image_size=16)


def read_all(out):
    import tarfile

    m, urls, _ = resolve_manifest(str(out))
    samples = []
    for url in urls:
        with tarfile.open(url) as tar:
            groups = {}
            for mem in tar.getmembers():
                key, _, fld = mem.name.partition(".")
                groups.setdefault(key, {})[fld] = tar.extractfile(mem).read()
        samples += [decode_sample(k, v, url) for k, v in groups.items()]
    return m, samples
