"""Builds the embedded demo data: python data/build_demo.py [--out DIR] [--force]

1. loads scikit-learn's bundled handwritten digits (1 797 8x8 grey images, 10 classes; no download),
   upsamples them bilinearly to 16x16 and splits off the last 20% of every class as validation;
2. fits the demo tokenizer (4x4-patch k-means, 128 codes, KMeans random_state=0, train split only)
   into data/demo/tokenizer.npz, unless that file exists (it is committed);
3. writes the token shards + manifests to data/demo/shards/{train,val} (git-ignored, rebuilt when the
   tokenizer file changes).

The same as `enat tokenize demo` and `python -m enat_lightning.data.demo`; `make demo` calls
enat_lightning.data.demo.ensure_demo_data(), which runs this only when something is missing.
"""
import sys

from enat_lightning.data.demo import main

if __name__ == "__main__":
    sys.exit(main())
