"""Measurements on models and samples: FID statistics, FLOP counts, attention/feature analyses (torch only)."""
