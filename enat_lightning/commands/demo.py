"""`enat demo`: the end-to-end demo (same as `make demo`)."""
from enat_lightning.demo import add_arguments, run  # noqa: F401

HELP = "train, sample and evaluate a tiny ENAT on the embedded demo data (CPU, minutes)"
