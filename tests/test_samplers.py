"""Samplers: every model with latents x each of its samplers, the default unchanged, the GMM in checkpoints."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from gon_lightning.callbacks import ImagePanels, PredictionWriter
from gon_lightning.cli import main
from gon_lightning.data import MNISTDataModule
from gon_lightning.errors import UserError
from gon_lightning.models import (
    GON,
    VAE,
    ConvAutoencoder,
    DetachedGON,
    GenerativeOptimizationNetwork,
    ImplicitGON,
    OriginModel,
    VariationalGON,
)
from gon_lightning.models.latent import PARTS, SamplerNotReady, fit_mixture, sample_mixture
from tests.cli_args import base_args

pytestmark = [pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning"), pytest.mark.usefixtures("one_thread")]

TINY = {
    "GON": lambda **kw: GON(nz=8, ngf=4, **kw),
    "DetachedGON": lambda **kw: DetachedGON(nz=8, ngf=4, **kw),
    "VariationalGON": lambda **kw: VariationalGON(nz=8, ngf=4, **kw),
    "ImplicitGON": lambda **kw: ImplicitGON(nz=8, widths=[16, 16], image_shape=(1, 32, 32), **kw),
    "ConvAutoencoder": lambda **kw: ConvAutoencoder(nz=8, ngf=4, **kw),
    "VAE": lambda **kw: VAE(nz=8, ngf=4, **kw),
}
SAMPLERS = {
    "GON": ("gaussian", "gmm"),
    "DetachedGON": ("gaussian", "gmm"),
    "VariationalGON": ("prior", "gaussian", "gmm"),
    "ImplicitGON": ("gaussian", "gmm"),
    "ConvAutoencoder": ("gaussian", "gmm"),
    "VAE": ("prior", "gaussian", "gmm"),
}


@pytest.fixture(scope="module")
def images(digits) -> torch.Tensor:
    """128 real digits, 32x32, uint8 (as a DataModule's split holds them)."""
    pixels = torch.from_numpy(digits[0][:128])[:, None]
    return F.pad(pixels, (2, 2, 2, 2))


def trained_latents(model, images: torch.Tensor) -> None:
    """What one training epoch leaves for the GON family's tracked Gaussian."""
    if isinstance(model, OriginModel) and model.fits_latent_gaussian:
        model.track_latents(model.encode_images(images[:64].float() / 255))
        model.fit_latent_gaussian()


@pytest.mark.parametrize("name", TINY)
def test_every_sampler_of_every_model_draws_images(images, name: str) -> None:
    torch.manual_seed(0)
    model = TINY[name](gmm_components=2).eval()
    assert model.samplers == SAMPLERS[name]
    trained_latents(model, images)
    for sampler in model.samplers:
        if sampler in model.lazy_samplers:
            with pytest.raises(SamplerNotReady, match=f"'{sampler}' sampler is fitted to the latents"):
                model.sample(2, sampler)  # no DataModule to fit it from
            model.fit_sampler(sampler, images)
        samples = model.sample(5, sampler)
        assert samples.shape == (5, 1, 32, 32), sampler
        assert samples.min() >= 0 and samples.max() <= 1
    assert model.sampler_fitted("gmm") and model.gmm_means.shape == (2, 8)


def test_the_default_sampler_is_the_one_of_before(images) -> None:
    """None gives today's samples bit for bit: the formulas `sample(n)` had before samplers existed."""
    gon = TINY["GON"]().eval()
    trained_latents(gon, images)
    torch.manual_seed(3)
    new = gon.sample(4)
    torch.manual_seed(3)
    mean, scale = gon.latent_gaussian()
    z = mean + torch.randn(4, 8, dtype=mean.dtype) @ scale.T
    with gon.evaluation_protocol():
        assert torch.equal(new, gon.decode_latents(z.float()))
    torch.manual_seed(3)
    assert torch.equal(gon.sample(4, "gaussian"), new)

    for name in ("VAE", "VariationalGON"):
        model = TINY[name]().eval()
        torch.manual_seed(3)
        new = model.sample(4)
        torch.manual_seed(3)
        with torch.no_grad(), model.evaluation_protocol():  # as the image panels called it
            assert torch.equal(new, model.decoder(torch.randn(4, 8)))

    gopt = GenerativeOptimizationNetwork(ndf=4, input_steps=2)
    torch.manual_seed(3)
    new = gopt.sample(3)
    torch.manual_seed(3)
    assert torch.equal(new, gopt.optimise_inputs(gopt.noise(3))[0])
    assert torch.equal(new, (torch.manual_seed(3), gopt.sample(3, "optimised"))[1])


def test_unknown_sampler_is_one_line_naming_the_model_and_its_samplers() -> None:
    with pytest.raises(UserError) as error:
        TINY["GON"]().sample(2, "prior")
    assert str(error.value) == "GON has no sampler 'prior'; its samplers: gaussian, gmm (default gaussian)"
    with pytest.raises(UserError, match="GenerativeOptimizationNetwork has no sampler 'gmm'; its samplers: optimised"):
        GenerativeOptimizationNetwork(ndf=4).sample(2, "gmm")
    with pytest.raises(UserError, match="gmm_components must be a positive integer"):
        TINY["ConvAutoencoder"](gmm_components=0)


def test_gmm_is_kept_in_checkpoints_and_restored(images, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = TINY["ConvAutoencoder"](gmm_components=3).eval()
    model.fit_sampler("gmm", images)
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "ae.ckpt")
    restored = ConvAutoencoder.load_from_checkpoint(tmp_path / "ae.ckpt").eval()  # strict: the buffers load
    assert restored.sampler_fitted("gmm") and restored.gmm_scales.shape == (3, 8, 8)
    assert not restored.sampler_fitted("gaussian")
    torch.manual_seed(1)
    a = restored.sample(6, "gmm")  # no refit: the weights are those it was fitted with, and no data is at hand
    torch.manual_seed(1)
    assert torch.equal(a, model.sample(6, "gmm"))
    # weights that come without a fit drop ours: it belongs to other weights
    restored.load_state_dict(TINY["ConvAutoencoder"]().state_dict())
    assert not restored.sampler_fitted("gmm")


def test_a_fit_is_kept_until_the_weights_change(images) -> None:
    model = TINY["ConvAutoencoder"]().eval()
    model.fit_sampler("gaussian", images)
    means = model.gaussian_means.clone()
    model.fit_sampler("gaussian", images[:64], refit=False)  # same weights: kept
    assert torch.equal(model.gaussian_means, means)
    with torch.no_grad():
        model.decoder.net[0].weight.add_(0.1)  # as a training step would
    with pytest.warns(UserWarning, match="fitted with other weights"):
        model.sample(2, "gaussian")  # nothing to refit from: says so and keeps the old fit
    model.fit_sampler("gaussian", images[:64], refit=False)
    assert not torch.equal(model.gaussian_means, means)


def test_mixture_fit_and_draws() -> None:
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0, 0, 0], [8, 8, 8, 8]]) * 1e-3  # the GON's latent scale
    z = torch.cat([c + 1e-3 * torch.randn(300, 4) for c in centres])
    weights, means, scales = fit_mixture(z, None)  # BIC over 1, 2, 5, 10
    assert len(weights) == 2
    order = means[:, 0].argsort()
    torch.testing.assert_close(means[order].float(), centres, atol=3e-4, rtol=0)
    torch.testing.assert_close(weights, torch.tensor([0.5, 0.5], dtype=torch.float64), atol=1e-6, rtol=0)
    one = fit_mixture(z, 1)
    torch.testing.assert_close(one[1][0], z.double().mean(0))
    torch.testing.assert_close(one[2][0] @ one[2][0].T, torch.cov(z.double().T))
    draws = sample_mixture(weights, means, scales, 4000)
    torch.testing.assert_close(draws.mean(0), z.double().mean(0), atol=3e-4, rtol=0)
    assert fit_mixture(z, 3)[0].shape == (3,)


def datamodule(mnist_root: Path) -> MNISTDataModule:
    return MNISTDataModule(root=str(mnist_root), batch_size=32, download=False)


def fitted_weights(mnist_root: Path, tmp_path: Path, callbacks: list) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    model = TINY["ConvAutoencoder"](gmm_components=2)
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=callbacks,
        default_root_dir=tmp_path,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(model, datamodule=datamodule(mnist_root))
    return model


def test_fitting_samplers_during_training_changes_no_weight(mnist_root: Path, tmp_path: Path) -> None:
    panels = ImagePanels(every_n_epochs=1, num_images=4, num_samples=4, sampler="gmm", dirpath=str(tmp_path / "im"))
    with_panels = fitted_weights(mnist_root, tmp_path, [panels])
    drawn = sorted(p.name for p in (tmp_path / "im").glob("samples-*"))
    assert drawn == ["samples-epoch0000.png", "samples-epoch0001.png"]
    assert with_panels.sampler_fitted("gmm")  # fitted from the DataModule's training split, at each panel
    without = fitted_weights(mnist_root, tmp_path, []).state_dict()
    assert set(with_panels.state_dict()) - set(without) == {f"gmm_{part}" for part in PARTS}
    for name, tensor in without.items():
        assert torch.equal(with_panels.state_dict()[name], tensor), name


def test_panels_refuse_a_sampler_the_model_does_not_have(mnist_root: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(base_args(mnist_root, tmp_path / "runs", "--images.sampler=prior"))
    assert "images.sampler: GON has no sampler 'prior'; its samplers: gaussian, gmm" in str(exit_info.value.code)


def test_predictions_draw_their_samples_with_the_chosen_sampler(tmp_path: Path, monkeypatch) -> None:
    model = TINY["VAE"]()
    drawn = []

    def sample(n: int, sampler: str | None = None) -> torch.Tensor:
        drawn.append(sampler)
        return torch.rand(n, 1, 32, 32)

    monkeypatch.setattr(model, "sample", sample)
    writer = PredictionWriter(output_dir=str(tmp_path), num_samples=4, sampler="prior")
    writer.setup(pl.Trainer(logger=False), model, "predict")
    batch = torch.rand(4, 1, 32, 32)
    writer.write_on_batch_end(pl.Trainer(logger=False), model, batch.clone(), None, batch, 0, 0)
    assert drawn == ["prior"] and (tmp_path / "samples.png").is_file()
    with pytest.raises(UserError, match=r"predictions\.sampler: GON has no sampler 'prior'; its samplers: gaussian"):
        writer.setup(pl.Trainer(logger=False), TINY["GON"](), "predict")
