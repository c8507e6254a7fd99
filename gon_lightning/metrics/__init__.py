"""Sample quality: feature extractors (`extractors.py`), the figures computed on their features (`scores.py`), how
close samples lie to the training images against held-out ones (`copying.py`), a dataset's real images
(`splits.py`) and their cached features (`reference.py`). docs/sample_quality.md has the protocol."""

from gon_lightning.metrics.copying import COPYING_FIGURES, CopyingTest, copying_figures, nearest_distances
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
    "COPYING_FIGURES",
    "EXTRACTORS",
    "NEAREST_K",
    "CopyingTest",
    "FeatureExtractor",
    "copying_figures",
    "extract",
    "figure_names",
    "frechet_distance",
    "kernel_distance",
    "load_extractor",
    "nearest_distances",
    "precision_recall_density_coverage",
    "reference_features",
    "score_features",
    "score_samples",
    "seeded_subset",
    "split_images",
]
