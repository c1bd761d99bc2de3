"""The one check of a ``--device`` value (commands and ``enat sample``'s Trainer options use it)."""
from __future__ import annotations

from enat_lightning.errors import UserError


def check_device(device: str | None) -> None:
    """None / 'cpu' / 'cuda' / 'cuda:K' that this machine has; else one line now, not a CUDA traceback later."""
    if device is None or str(device) == "cpu":
        return
    d = str(device)
    if not (d == "cuda" or d.startswith("cuda:")):
        raise UserError(f"--device must be cpu, cuda or cuda:K, got {d!r}")
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"--device {d}: no CUDA GPU is visible on this machine (torch.cuda.is_available() is "
                        f"False); use --device cpu")
    index = d.partition(":")[2]
    if index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        raise UserError(f"--device {d}: this machine has {torch.cuda.device_count()} GPU(s)")
