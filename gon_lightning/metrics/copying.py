"""Data copying: are the samples closer to the training images than unseen real images are?

A model (or a prior fitted to its training latents) can score well on every figure of `scores.py` by handing back
its training images, or near copies of them. What gives it away is distance to the training set: a fresh draw from
the data distribution lies as far from its nearest training image as a held-out real image does; a copy lies
nearer. Two figures, on the same features as the others, with the test split as the held-out images:

- `copy_ratio`: the median distance of the samples to their nearest training image, divided by the median of the
  held-out images' (1 for fresh draws; below 1 nearer the training set than unseen data: copying; above 1 farther,
  e.g. blurry or broken samples).
- `copying_z`: the data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), their C_T. The training
  features are cut into cells by k-means; in each cell a Mann-Whitney U test compares the samples' distances to
  the cell's nearest training image with the held-out images', as a z-score (about N(0, 1) for fresh draws, <<0
  copying, >>0 underfitting); C_T is the mean of the cells' z-scores weighted by their share of the held-out
  images, over the cells that hold at least `min_cell_samples` samples. Per cell, so copying in one region is
  not hidden by underfitting in another.

The cells and the held-out images' distances depend on the training and held-out features alone: `CopyingTest` fits
them once and scores any number of sample sets (the in-loop callback scores one per epoch).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from gon_lightning.errors import UserError
from gon_lightning.metrics.distances import BLOCK_ELEMENTS, as_float64, rows_per_block, squared_distances

COPY_CELLS = 20  # k-means cells of the training features, at most (fewer when the held-out set is small)
MIN_CELL_IMAGES = 20  # held-out images per cell on average, and samples a cell needs to enter C_T (tau = 20 / m)
COPYING_FIGURES = ("copy_ratio", "copying_z")


def nearest_distances(queries: Tensor, reference: Tensor, block_elements: int = BLOCK_ELEMENTS) -> Tensor:
    """Euclidean distance (float64) from each row of `queries` to its nearest row of `reference`, a block of rows
    at a time (at most `block_elements` distances held at once)."""
    out = [
        squared_distances(block, reference).min(1).values
        for block in queries.split(rows_per_block(len(reference), block_elements))
    ]
    return torch.cat(out).sqrt() if out else torch.empty(0, dtype=torch.float64)


def mann_whitney_z(samples: Tensor, held_out: Tensor) -> float:
    """Meehan et al.'s Z_U: the Mann-Whitney U of the samples' distances against the held-out ones (pairs where
    the sample's is larger, ties a half: scipy's U of its first argument), standardised under the null hypothesis
    that both come from one distribution: (U - mn/2) / sqrt(mn(m + n + 1)/12)."""
    from scipy.stats import mannwhitneyu  # scikit-learn's dependency; imported when used

    m, n = len(samples), len(held_out)
    u = float(mannwhitneyu(samples.numpy(), held_out.numpy(), alternative="two-sided").statistic)
    return (u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12)


class CopyingTest:
    """The copying figures of sample sets against fixed training and held-out features (N, d) each.

    Fitting costs one k-means of the training features (scikit-learn, seeded with `seed`) and the held-out images'
    nearest-training distances; each `score` then costs the samples' distances alone.
    """

    def __init__(
        self,
        train: Tensor,
        held_out: Tensor,
        cells: int = COPY_CELLS,
        min_cell_images: int = MIN_CELL_IMAGES,
        seed: int = 0,
        block_elements: int = BLOCK_ELEMENTS,
    ) -> None:
        from sklearn.cluster import KMeans  # a second's import: only where the figures are computed

        self.train = as_float64(train, "training features")
        self.held_out = as_float64(held_out, "held-out features")
        if self.train.shape[1] != self.held_out.shape[1]:
            raise UserError(
                f"training and held-out features differ in size: {self.train.shape[1]} and {self.held_out.shape[1]}"
            )
        self.min_cell_images = min_cell_images
        self.block_elements = block_elements
        self.cells = max(1, min(cells, len(self.held_out) // min_cell_images, len(self.train)))
        train_np = self.train.cpu().numpy()
        self._kmeans = KMeans(self.cells, n_init=1, random_state=seed).fit(train_np)
        self.train_cells = torch.from_numpy(self._kmeans.labels_.astype(np.int64))
        self.held_out_cells = self._cells_of(self.held_out)
        self.held_out_nearest = nearest_distances(self.held_out, self.train, block_elements)
        self.held_out_in_cell = self._in_cell_distances(self.held_out, self.held_out_cells)

    def _cells_of(self, features: Tensor) -> Tensor:
        return torch.from_numpy(self._kmeans.predict(features.cpu().numpy()).astype(np.int64))

    def _in_cell_distances(self, features: Tensor, cells: Tensor) -> Tensor:
        """Each row's distance to the nearest training image of its own cell (the test's L within a cell)."""
        out = torch.empty(len(features), dtype=torch.float64)
        for cell in cells.unique().tolist():
            rows = cells == cell
            out[rows] = nearest_distances(features[rows], self.train[self.train_cells == cell], self.block_elements)
        return out

    def score(self, samples: Tensor) -> dict[str, float]:
        """`copy_ratio` and `copying_z` of the samples' features (M, d); `copying_z` is NaN when no cell holds
        `min_cell_images` samples (fewer samples than that in all)."""
        samples = as_float64(samples, "sample features")
        nearest = nearest_distances(samples, self.train, self.block_elements)
        held_median = float(self.held_out_nearest.median())
        ratio = float(nearest.median()) / held_median if held_median > 0 else math.inf
        cells = self._cells_of(samples)
        in_cell = self._in_cell_distances(samples, cells)
        weighted, weights = 0.0, 0.0
        for cell in range(self.cells):
            mine, theirs = in_cell[cells == cell], self.held_out_in_cell[self.held_out_cells == cell]
            if len(mine) < self.min_cell_images or len(theirs) == 0:
                continue  # outside Pi_tau: too few samples to test, or no held-out image to compare with
            share = len(theirs) / len(self.held_out)
            weighted += share * mann_whitney_z(mine, theirs)
            weights += share
        return {"copy_ratio": ratio, "copying_z": weighted / weights if weights else math.nan}


def copying_figures(train: Tensor, samples: Tensor, held_out: Tensor, seed: int = 0) -> dict[str, float]:
    """`copy_ratio` and `copying_z` of `samples` against `train`, with `held_out` as the unseen real images (all
    features (N, d) on one extractor); see the module's docstring."""
    return CopyingTest(train, held_out, seed=seed).score(samples)


def latent_copying_figures(train: Tensor, samples: Tensor, held_out: Tensor, seed: int = 0) -> dict[str, float]:
    """The copying figures in a latent space (a learned prior's): `latent_copy_ratio` and `latent_copying_z` of
    sampled latents against the training latents, with the test images' latents as the held-out ones, each dimension
    standardised by the training latents' mean and std (the space the priors are trained in)."""
    train = as_float64(train, "training latents")
    mean, std = train.mean(0), train.std(0).clamp_min(1e-8)
    samples, held_out = as_float64(samples, "sampled latents"), as_float64(held_out, "test latents")
    figures = copying_figures((train - mean) / std, (samples - mean) / std, (held_out - mean) / std, seed)
    return {f"latent_{name}": value for name, value in figures.items()}
