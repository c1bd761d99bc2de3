"""Evaluation protocol: feature networks (the FID Inception-v3; the demo classifier via a plugin),
sampling for FID, scoring, Frechet distance, FLOP counting.

Pure torch (+ the [eval] extra for the Inception network, imported lazily); the Lightning callback
lives in ``enat_lightning.callbacks.fid``.
"""
from .evaluate import (SamplerSettings, evaluate, extract, gather_rows, generate_images, load_samples,
                       sample_labels, score_features, score_images, stats_of_images)
from .features import (INCEPTION_FILE, FeatureExtractor, Features, InceptionV3Features, TFInceptionV3,
                       WheelInceptionFeatures, load_feature_extractor)

__all__ = ["INCEPTION_FILE", "FeatureExtractor", "Features", "InceptionV3Features", "SamplerSettings",
           "TFInceptionV3", "WheelInceptionFeatures", "evaluate",
           "extract", "gather_rows", "generate_images", "load_feature_extractor", "load_samples", "sample_labels",
           "score_features", "score_images", "stats_of_images"]
