"""Sampling: mask schedules, the iterative ENAT/NAT sampler, sample files (pure torch/numpy/PIL)."""
from .iterative import GenerationTrace, StepTrace, generate
from .schedules import SCHEDULES, mask_ratio, masked_counts
from .settings import SamplerSettings

__all__ = ["SCHEDULES", "GenerationTrace", "SamplerSettings", "StepTrace", "generate", "mask_ratio", "masked_counts"]
