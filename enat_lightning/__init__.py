"""enat-lightning: train, sample, evaluate and ablate ENAT / NAT masked-token image generators."""
from enat_lightning.quiet import silence_lightning_tips as _silence_lightning_tips

_silence_lightning_tips()  # once for the whole package: no command prints Lightning's litlogger/litmodels adverts
