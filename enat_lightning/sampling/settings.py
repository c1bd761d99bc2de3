"""The sampler settings that change a result, declared once for every caller of ``generate``."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SamplerSettings:
    """Everything of the sampler that changes the result (recorded in every results file).

    Defaults: the official ImageNet-256 ENAT-L evaluation (cfg 2.5, mask_temp 1.5, samp_temp 6, 8
    steps; fixtures README). Callers that need more
    (``sampling.runner.SampleSettings``: seed, batch size) subclass it.
    """

    steps: int = 8
    cfg_scale: float = 2.5
    mask_temp: float = 1.5
    samp_temp: float = 6.0
    schedule: str = "cosine"
    reuse: bool = True

    def to_dict(self) -> dict:
        return asdict(self)
