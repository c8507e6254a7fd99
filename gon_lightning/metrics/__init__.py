"""Sample quality: feature extractors (`extractors.py`), the figures computed on their features (`scores.py`), a
dataset's real images (`splits.py`) and their cached features (`reference.py`). docs/sample_quality.md has the
protocol."""

from gon_lightning.metrics.extractors import EXTRACTORS, FeatureExtractor, load_extractor
from gon_lightning.metrics.reference import extract, reference_features
from gon_lightning.metrics.scores import (
    NEAREST_K,
    figure_names,
    frechet_distance,
    kernel_distance,
    precision_recall_density_coverage,
    score_features,
    score_samples,
    seeded_subset,
)
from gon_lightning.metrics.splits import split_images

__all__ = [
    "EXTRACTORS",
    "NEAREST_K",
    "FeatureExtractor",
    "extract",
    "figure_names",
    "frechet_distance",
    "kernel_distance",
    "load_extractor",
    "precision_recall_density_coverage",
    "reference_features",
    "score_features",
    "score_samples",
    "seeded_subset",
    "split_images",
]
