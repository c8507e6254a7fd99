"""Pairwise distances of feature sets, in float64 and in blocks of rows: what the k-NN figures (`scores.py`) and
the copying test (`copying.py`) are both built on."""

from __future__ import annotations

import torch
from torch import Tensor

from gon_lightning.errors import UserError

BLOCK_ELEMENTS = 1 << 23  # distances held at once by the k-NN passes (64 MiB in float64)


def as_float64(features: Tensor, what: str) -> Tensor:
    if features.dim() != 2 or len(features) < 2:
        raise UserError(f"{what} must be at least 2 feature vectors (N, d), got shape {tuple(features.shape)}")
    return features.detach().to(torch.float64)


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(len(a), len(b)) squared Euclidean distances; float64 keeps the expansion's rounding far below any gap."""
    return (a.square().sum(1)[:, None] + b.square().sum(1)[None, :] - 2 * a @ b.T).clamp_min_(0)


def rows_per_block(columns: int, block_elements: int) -> int:
    return max(1, block_elements // max(1, columns))
