"""The ``enat`` commands other than fit/validate/test: one typed function each (its signature is its
command line, parsed by jsonargparse in ``enat_lightning.cli``). Tests call the functions directly."""
import enat_lightning.demo.classifier  # noqa: F401  registers the 'demo' feature network and references
