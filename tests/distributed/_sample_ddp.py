"""Samples the tiny official ENAT into OUT with WORLD CPU processes (gloo) through sample_to_dir.

Used by tests/distributed/test_sample_world_size.py (not collected by pytest):
    python tests/distributed/_sample_ddp.py OUT WORLD
With WORLD=2 Lightning's "ddp" launcher re-runs this script for rank 1.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository (for tests/ helpers)

from enat_lightning.models import from_official  # noqa: E402
from enat_lightning.prediction import sample_to_dir  # noqa: E402
from enat_lightning.sampling import SamplerSettings  # noqa: E402
from enat_lightning.sampling.runner import SampleRun  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "official_enat_tiny.pt"
LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 3]  # 11 samples in 4 chunks of 3: rank 0 makes 2, rank 1 makes 2
SETTINGS = SamplerSettings(steps=4, cfg_scale=2.0, mask_temp=1.5, samp_temp=2.0)


def main(out: str, world: int) -> dict:
    torch.set_num_threads(1)
    fx = torch.load(FIXTURE, map_location="cpu", weights_only=True)
    model = from_official(fx["config"], fx["state_dict"])
    opts = {"accelerator": "cpu", "devices": world, "strategy": "ddp" if world > 1 else "auto"}
    return sample_to_dir(model, LABELS, out, SETTINGS, run=SampleRun(seed=5, batch_size=3), trainer_options=opts,
                         progress=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
