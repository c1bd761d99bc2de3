"""python -m enat_lightning.demo (what `make demo` runs)."""
from enat_lightning.demo.pipeline import main

raise SystemExit(main())
