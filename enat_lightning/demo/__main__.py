"""python -m enat_lightning.demo (what `make demo` runs): `enat demo` with the same arguments."""
import sys

from enat_lightning.cli import main

raise SystemExit(main(["demo", *sys.argv[1:]]))
