"""Paper studies: train every row of a study spec, evaluate it, write results beside the paper numbers (above training and evaluation)."""
import enat_lightning.demo.classifier  # noqa: F401  registers the 'demo' feature network and references
