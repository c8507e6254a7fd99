"""Features of a dataset's real images, computed once per (dataset, split, image size, extractor weights) and cached
beside its decoded images: `<cache>/features/<extractor>-<sha256 prefix>/<split>.npy` (float32, one row per image,
in the split's order). The decoded cache is replaced whole when its files change, and these with it."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from gon_lightning.metrics.extractors import FeatureExtractor, atomic_file
from gon_lightning.metrics.splits import split_images

FEATURE_BATCH = 256


@torch.no_grad()
def extract(extractor: FeatureExtractor, images: Tensor, batch_size: int = FEATURE_BATCH) -> Tensor:
    """Features (N, d), float32 on the CPU, of images (N, C, H, W): uint8 (0-255) or float in [0, 1]."""
    device = next(extractor.parameters()).device
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        batch = batch.float().div_(255) if batch.dtype == torch.uint8 else batch.float()
        out.append(extractor(batch).float().cpu())
    return torch.cat(out) if out else torch.empty(0, extractor.num_features)


def _split_key(datamodule: Any, split: str) -> str:
    """The split's name, plus a hash of its rows when it is a held-out part (val_fraction)."""
    rows = datamodule.datasets[split].rows
    if rows is None:
        return split
    return f"{split}-{hashlib.sha256(rows.numpy().tobytes()).hexdigest()[:12]}"


def features_path(datamodule: Any, split: str, extractor: FeatureExtractor) -> Path:
    folder = Path(datamodule.cache_path) / "features" / f"{extractor.name}-{extractor.sha256[:16]}"
    return folder / f"{_split_key(datamodule, split)}.npy"


def reference_features(datamodule: Any, split: str, extractor: FeatureExtractor) -> Tensor:
    """The split's features on `extractor`, from the cache or computed now (and cached)."""
    images, _ = split_images(datamodule, split)
    path = features_path(datamodule, split, extractor)
    if path.is_file():
        try:
            cached = torch.from_numpy(np.load(path))
            if cached.shape == (len(images), extractor.num_features):
                return cached
        except (OSError, ValueError):
            pass  # unreadable: computed again below
    features = extract(extractor, images)
    try:
        save_array(path, features.numpy())
    except OSError as error:
        rank_zero_warn(f"could not cache the reference features in {path} ({error}); they are computed each time")
    return features


def save_array(path: Path, array: np.ndarray) -> None:
    """np.save, atomically."""
    with atomic_file(path) as staging, open(staging, "wb") as f:
        np.save(f, array)
