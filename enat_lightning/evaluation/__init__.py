"""Evaluation protocol: feature networks (Inception-v3, demo classifier), sampling for FID, scoring.

Pure torch (+ torchmetrics / torch-fidelity for the Inception network, imported lazily); the
Lightning callback lives in ``enat_lightning.callbacks.fid``.
"""
from .evaluate import (SamplerSettings, evaluate, extract, gather_rows, generate_images, load_samples,
                       sample_labels, score_features, score_images, stats_of_images)
from .features import INCEPTION_FILE, FeatureExtractor, Features, InceptionV3Features, load_feature_extractor

__all__ = ["INCEPTION_FILE", "FeatureExtractor", "Features", "InceptionV3Features", "SamplerSettings", "evaluate",
           "extract", "gather_rows", "generate_images", "load_feature_extractor", "load_samples", "sample_labels",
           "score_features", "score_images", "stats_of_images"]
