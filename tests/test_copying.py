"""The data-copying figures (gon_lightning/metrics/copying.py): a generator that hands back training images is
flagged, one drawing fresh data is not, and the statistics are the ones their definitions give."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import mannwhitneyu

from gon_lightning.errors import UserError
from gon_lightning.metrics import CopyingTest, copying_figures, nearest_distances, score_samples
from gon_lightning.metrics.copying import latent_copying_figures


def draw(n: int, seed: int, d: int = 8) -> torch.Tensor:
    """n points of one fixed distribution (a 3-component mixture, so the k-means cells mean something)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[4.0] * d, [-4.0] * d, [0.0] * d])
    return centres[torch.randint(3, (n,), generator=g)] + torch.randn(n, d, generator=g)


@pytest.fixture(scope="module")
def copying() -> CopyingTest:
    return CopyingTest(draw(3000, 0), draw(1000, 1))


def test_fresh_draws_are_not_flagged(copying: CopyingTest) -> None:
    fresh = copying.score(draw(2000, 2))
    assert fresh["copy_ratio"] == pytest.approx(1.0, abs=0.06)
    assert abs(fresh["copying_z"]) < 3  # about N(0, 1) under the null hypothesis


def test_training_images_handed_back_are_flagged(copying: CopyingTest) -> None:
    copies = copying.score(copying.train[:2000].float())  # verbatim
    # a cell's z can reach only -sqrt(3 m n / (m + n + 1)) when every sample lies nearer than every held-out image
    assert copies["copy_ratio"] < 1e-6 and copies["copying_z"] < -8
    # near copies (a small fraction of the held-out images' distance away) are flagged too
    g = torch.Generator().manual_seed(3)
    near = copying.train[:2000] + 0.05 * torch.randn(2000, 8, generator=g, dtype=torch.float64)
    assert copying.score(near)["copy_ratio"] < 0.3 and copying.score(near)["copying_z"] < -8
    # and a prior that copies half the time still is
    mixed = copying.score(torch.cat([copying.train[:1000], draw(1000, 4).double()]))
    assert mixed["copy_ratio"] < 0.5 and mixed["copying_z"] < -3


def test_blurred_samples_lie_farther_than_held_out_images(copying: CopyingTest) -> None:
    g = torch.Generator().manual_seed(5)
    noisy = draw(2000, 6) + 1.5 * torch.randn(2000, 8, generator=g)  # underfitting: farther from the training set
    figures = copying.score(noisy)
    assert figures["copy_ratio"] > 1.2 and figures["copying_z"] > 5


def test_the_figures_are_their_definitions() -> None:
    g = torch.Generator().manual_seed(7)
    train, held_out, samples = torch.randn(200, 3, generator=g), torch.randn(60, 3, generator=g), torch.randn(50, 3)
    direct = torch.cdist(samples.double(), train.double()).min(1).values
    assert torch.allclose(nearest_distances(samples.double(), train.double(), block_elements=7), direct)
    held = torch.cdist(held_out.double(), train.double()).min(1).values
    one_cell = CopyingTest(train, held_out, cells=1, min_cell_images=20)  # C_T of one cell is its Z_U
    figures = one_cell.score(samples)
    assert figures["copy_ratio"] == pytest.approx(float(direct.median() / held.median()), rel=1e-12)
    u = mannwhitneyu(direct.numpy(), held.numpy()).statistic  # pairs where the sample's distance is larger
    m, n = len(samples), len(held_out)
    assert figures["copying_z"] == pytest.approx((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12), rel=1e-9)
    # cells: as many as the held-out set allows 20 images each, at most 20
    assert CopyingTest(train, held_out).cells == 3
    # too few samples for any cell to be tested: no z, still a ratio
    assert math.isnan(one_cell.score(samples[:10])["copying_z"])
    assert copying_figures(train, samples, held_out) == CopyingTest(train, held_out).score(samples)


def test_latent_copying_figures_are_the_figures_on_standardised_latents() -> None:
    # latents as a GON's are: each dimension on its own scale, far from unit (std ~350 after the quickstart)
    scale, shift = torch.linspace(1, 400, 8, dtype=torch.float64), torch.linspace(-50, 50, 8, dtype=torch.float64)
    train, held_out = draw(3000, 0) * scale + shift, draw(1000, 1) * scale + shift
    fresh, copies = draw(1000, 2) * scale + shift, train[:1000]
    figures = latent_copying_figures(train, fresh, held_out)
    assert list(figures) == ["latent_copy_ratio", "latent_copying_z"]
    assert figures["latent_copy_ratio"] == pytest.approx(1.0, abs=0.08) and abs(figures["latent_copying_z"]) < 3
    handed_back = latent_copying_figures(train, copies, held_out)
    assert handed_back["latent_copy_ratio"] < 1e-6 and handed_back["latent_copying_z"] < -8
    # the figures of the standardised latents: the per-dimension scale and shift are gone
    mean, std = train.mean(0), train.std(0)
    standard = copying_figures((train - mean) / std, (fresh - mean) / std, (held_out - mean) / std)
    assert figures == {f"latent_{name}": value for name, value in standard.items()}


def test_score_samples_adds_the_copying_figures_with_held_out_features() -> None:
    g = torch.Generator().manual_seed(8)
    reference, fake, held = (torch.randn(n, 4, generator=g) for n in (300, 100, 100))
    assert "copy_ratio" not in score_samples(reference, fake, "lenet")
    figures = score_samples(reference, fake, "lenet", held_out=held)
    assert list(figures)[-2:] == ["copy_ratio", "copying_z"]
    with pytest.raises(UserError, match="differ in size"):
        CopyingTest(torch.randn(50, 4), torch.randn(40, 3))


def test_evaluates_table_notes_a_precision_density_contradicts_and_copying() -> None:
    from gon_lightning.evaluation import notes

    noise = {"precision": 0.52, "density": 0.13, "copy_ratio": 1.9, "copying_z": 8.7}  # uniform noise on MNIST5k
    digits = {"precision": 0.98, "density": 1.02, "copy_ratio": 0.95, "copying_z": -0.2}  # held-out digits
    copies = {**digits, "copy_ratio": 0.0, "copying_z": -7.4}  # training digits handed back
    assert [line.split(":")[0] for line in notes(noise)] == ["note"] and "read density" in notes(noise)[0]
    assert notes(digits) == []
    assert len(notes(copies)) == 1 and "copying its training data" in notes(copies)[0]
    assert notes({**digits, "copying_z": None}) == [] and notes({"fd_lenet": 3.0}) == []
    memorising = {**digits, "latent_copy_ratio": 0.84, "latent_copying_z": -3.5}  # a prior's latents, not its images
    assert len(notes(memorising)) == 1 and "memorising" in notes(memorising)[0]
