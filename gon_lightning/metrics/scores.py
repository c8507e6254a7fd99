"""Sample-quality figures computed from features: Fréchet distance, kernel distance, precision/recall, density/coverage.

The Fréchet distance and the kernel (MMD) distance are torchmetrics' `FrechetInceptionDistance` and
`KernelInceptionDistance`, fed features that were extracted once (`IdentityFeatures` hands them through), so the
maths is the maintained one and the features are computed, cached and saved by us. Precision and recall
(Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020) exist in no maintained torch package, so
they are here: k-nearest-neighbour balls on the same features, in float64, one block of rows at a time, so 50,000
x 50,000 distances never sit in memory (docs/sample_quality.md).

A figure is named after the features it was computed on: `fid`/`kid_*` only for the Inception-v3 features the
FID and KID papers defined; on any other extractor `fd_<name>` and `kd_*_<name>` (`figure_names`).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from gon_lightning.errors import UserError
from gon_lightning.metrics.copying import CopyingTest
from gon_lightning.metrics.distances import BLOCK_ELEMENTS, as_float64, rows_per_block, squared_distances

INCEPTION = "inception"
NEAREST_K = 5  # Naeem et al.'s choice for density and coverage; the same k serves precision and recall
KID_SUBSETS = 100  # torchmetrics' and the KID paper's defaults
KID_SUBSET_SIZE = 1000


class IdentityFeatures(nn.Module):
    """A torchmetrics feature module that hands precomputed (B, d) features through unchanged."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: Tensor) -> Tensor:
        return features


def figure_names(extractor: str) -> dict[str, str]:
    """The name of each figure on `extractor`'s features: FID and KID are Inception's by definition."""
    if extractor == INCEPTION:
        return {"fd": "fid", "kd_mean": "kid_mean", "kd_std": "kid_std"}
    return {"fd": f"fd_{extractor}", "kd_mean": f"kd_mean_{extractor}", "kd_std": f"kd_std_{extractor}"}


def frechet_distance(real: Tensor, fake: Tensor) -> float:
    """The Fréchet distance between Gaussians fitted to two feature sets (N, d) and (M, d), in float64."""
    real, fake = as_float64(real, "real features"), as_float64(fake, "fake features")
    metric = FrechetInceptionDistance(feature=IdentityFeatures(real.shape[1]), sync_on_compute=False)
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def kernel_distance(
    real: Tensor, fake: Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation over `subsets` random subsets of the squared MMD with the cubic polynomial
    kernel (the KID estimator); subsets of min(subset_size, N, M), drawn from a generator seeded with `seed`."""
    real, fake = as_float64(real, "real features"), as_float64(fake, "fake features")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*will save all extracted features.*")
        metric = KernelInceptionDistance(
            feature=IdentityFeatures(real.shape[1]),
            subsets=subsets,
            subset_size=min(subset_size, len(real), len(fake)),
            sync_on_compute=False,
        )
    metric.set_dtype(torch.float64)
    metric.update(real, real=True)
    metric.update(fake, real=False)
    with torch.random.fork_rng(devices=[]):  # torchmetrics draws the subsets from the global generator
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def kth_neighbour_radii(x: Tensor, k: int, block_elements: int = BLOCK_ELEMENTS) -> Tensor:
    """Squared distance from each row of x to its k-th nearest other row (the radius of its k-NN ball)."""
    if len(x) <= k:
        raise UserError(f"nearest_k={k} needs more than {k} feature vectors per set, got {len(x)}")
    radii = []
    for block in x.split(rows_per_block(len(x), block_elements)):
        # k + 1 smallest: the row itself (distance 0) comes first
        radii.append(squared_distances(block, x).topk(k + 1, dim=1, largest=False).values[:, k])
    return torch.cat(radii)


def precision_recall_density_coverage(
    real: Tensor, fake: Tensor, nearest_k: int = NEAREST_K, block_elements: int = BLOCK_ELEMENTS
) -> dict[str, float]:
    """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of fake features
    against real ones, each (N, d), with k-NN balls of `nearest_k`.

    A point lies in a ball when its distance is at most the radius (the papers' closed balls, `<=`): a set scored
    against itself has precision, recall and coverage 1 and density (k + 1) / k, since each real point's ball holds
    itself and its k neighbours. At most `block_elements` distances are held at once.
    """
    real, fake = as_float64(real, "real features"), as_float64(fake, "fake features")
    if real.shape[1] != fake.shape[1]:
        raise UserError(f"real and fake features differ in size: {real.shape[1]} and {fake.shape[1]}")
    real_radii = kth_neighbour_radii(real, nearest_k, block_elements)
    fake_radii = kth_neighbour_radii(fake, nearest_k, block_elements)
    fake_in_real_balls = torch.zeros(len(fake), dtype=torch.long, device=fake.device)  # how many real balls hold it
    real_in_fake_ball = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    real_covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    start = 0
    for block in real.split(rows_per_block(len(fake), block_elements)):
        distances = squared_distances(block, fake)  # (rows of real, all fake)
        inside_real = distances <= real_radii[start : start + len(block), None]
        fake_in_real_balls += inside_real.sum(0)
        real_covered[start : start + len(block)] = inside_real.any(1)
        real_in_fake_ball[start : start + len(block)] = (distances <= fake_radii[None, :]).any(1)
        start += len(block)
    return {
        "precision": float((fake_in_real_balls > 0).double().mean()),
        "recall": float(real_in_fake_ball.double().mean()),
        "density": float(fake_in_real_balls.double().mean() / nearest_k),
        "coverage": float(real_covered.double().mean()),
    }


def score_features(
    real: Tensor,
    fake: Tensor,
    extractor: str,
    nearest_k: int = NEAREST_K,
    manifold_real: Tensor | None = None,
    kid_subsets: int = KID_SUBSETS,
    kid_subset_size: int = KID_SUBSET_SIZE,
    seed: int = 0,
) -> dict[str, float]:
    """Every figure of `fake` against `real` features, named for `extractor` (`figure_names`).

    The Fréchet and kernel distances use all of `real`; precision, recall, density and coverage use
    `manifold_real` when given (a subset of the reference as large as the fake set: k-NN radii depend on the
    set's size, so the papers compare sets of equal size).
    """
    names = figure_names(extractor)
    kd_mean, kd_std = kernel_distance(real, fake, kid_subsets, kid_subset_size, seed)
    figures = {names["fd"]: frechet_distance(real, fake), names["kd_mean"]: kd_mean, names["kd_std"]: kd_std}
    figures.update(precision_recall_density_coverage(real if manifold_real is None else manifold_real, fake, nearest_k))
    return figures


def seeded_subset(features: Tensor, count: int, seed: int = 0) -> Tensor:
    """`count` rows of `features` chosen with a generator seeded with `seed`, in their order (all when count >= N)."""
    if count >= len(features):
        return features
    rows = torch.randperm(len(features), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    return features[rows.to(features.device)]


def score_samples(
    reference: Tensor,
    fake: Tensor,
    extractor: str,
    nearest_k: int = NEAREST_K,
    seed: int = 0,
    kid_subsets: int = KID_SUBSETS,
    held_out: Tensor | CopyingTest | None = None,
) -> dict[str, float]:
    """The evaluation protocol (docs/sample_quality.md): `score_features` of `fake` against the whole `reference`
    for the Fréchet and kernel distances, and against a subset of it as large as `fake` (seeded) for precision,
    recall, density and coverage. With `held_out` (features of unseen real images, or a `CopyingTest` fitted to
    the reference and them) also `copy_ratio` and `copying_z` (`copying.py`)."""
    manifold = seeded_subset(reference, len(fake), seed)
    figures = score_features(reference, fake, extractor, nearest_k, manifold, kid_subsets, seed=seed)
    if held_out is not None:
        test = held_out if isinstance(held_out, CopyingTest) else CopyingTest(reference, held_out, seed=seed)
        figures.update(test.score(fake))
    return figures
