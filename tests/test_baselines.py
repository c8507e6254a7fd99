"""The baselines: convolutional autoencoder, VAE, Generative Optimization Network, and opt-in torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gon_lightning.callbacks import CompileModules
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.models import GON, VAE, ConvAutoencoder, GenerativeOptimizationNetwork
from gon_lightning.models.base import per_image_sse

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture
def images(digits) -> torch.Tensor:
    """128 real digits, 32x32 in [0, 1] (MNIST's 28x28 padded as torchvision-resized MNIST would look)."""
    pixels = torch.from_numpy(digits[0][:128]).float().div(255)[:, None]
    return F.pad(pixels, (2, 2, 2, 2))


def fit(model: pl.LightningModule, images: torch.Tensor, steps: int, **trainer_kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
        limit_val_batches=0,
        **trainer_kwargs,
    )
    trainer.fit(model, DataLoader(images, batch_size=32, shuffle=True, drop_last=True))
    return trainer


def reconstruction_sse(model, images: torch.Tensor) -> float:
    with torch.no_grad(), model.evaluation_protocol():
        return per_image_sse(model.reconstruct(images), images).mean().item()


def test_parameter_counts_match_the_references():
    assert n_params(ConvAutoencoder(nz=256, ngf=16)) == 607_649
    assert n_params(VAE(nz=256, ngf=16)) == 739_233
    assert n_params(VAE(nz=256, ngf=8)) == 415_057  # parameter-matched to the V-GON
    assert n_params(ConvAutoencoder(nz=256, ngf=16)) == 2 * n_params(GON(nz=256, ngf=16)) + 255  # "half the parameters"


def test_autoencoder_learns(images):
    pl.seed_everything(0)
    model = ConvAutoencoder(nz=16, ngf=8, lr=3e-3)
    before = reconstruction_sse(model, images)
    fit(model, images, steps=40)
    assert reconstruction_sse(model, images) < 0.5 * before
    z = model.encode_images(images[:4])
    assert z.shape == (4, 16) and model.decode_latents(z).shape == (4, 1, 32, 32)


def test_vae_learns_and_samples(images):
    pl.seed_everything(0)
    model = VAE(nz=16, ngf=8, lr=3e-3)

    def nelbo() -> float:
        with torch.no_grad(), model.evaluation_protocol():
            return model.loss(images)[0].mean().item()

    before = nelbo()
    fit(model, images, steps=40)
    assert nelbo() < 0.6 * before
    with torch.no_grad(), model.evaluation_protocol():
        # reconstructions decode a posterior sample (the references' protocol): two differ
        assert not torch.equal(model.reconstruct(images[:8]), model.reconstruct(images[:8]))
        samples = model.sample(5)
    assert samples.shape == (5, 1, 32, 32) and samples.min() >= 0 and samples.max() <= 1


def test_vae_reconstructs_a_posterior_sample_by_default(images):
    x = images[:8]
    sampled, mean = VAE(nz=8, ngf=4).eval(), VAE(nz=8, ngf=4, eval_latent="mean").eval()
    mean.load_state_dict(sampled.state_dict())
    mu, logvar = sampled.posterior(x)
    torch.manual_seed(0)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    torch.manual_seed(0)
    torch.testing.assert_close(sampled.reconstruct(x), sampled.decoder(z))
    torch.testing.assert_close(mean.reconstruct(x), mean.decoder(mu))
    with pytest.raises(UserError, match="eval_latent"):
        VAE(eval_latent="median")


def test_vae_logs_elbo_and_bits_per_dim(images):
    model = VAE(nz=8, ngf=4)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, inference_mode=False)
    (results,) = trainer.test(model, DataLoader(images[:64], batch_size=32), verbose=False)
    assert {"test/sse", "test/mse", "test/psnr", "test/elbo", "test/bpd"} <= results.keys()
    assert results["test/bpd"] == pytest.approx(results["test/elbo"] / (1024 * torch.log(torch.tensor(2.0)).item()))


def test_gopt_input_optimisation_raises_the_real_score_and_leaves_d_untouched(images):
    pl.seed_everything(0)
    model = GenerativeOptimizationNetwork(ndf=8, input_steps=10, input_lr=0.05, lr=1e-3)
    fit(model, images, steps=30)
    d = model.discriminator
    with torch.no_grad():
        assert torch.sigmoid(d(images)).mean() > 0.5  # it learnt to tell the digits ...
    noise = model.noise(64)
    for p in d.parameters():
        p.grad = None
    fakes, steps = model.optimise_inputs(noise)
    assert all(p.grad is None for p in d.parameters())  # pixels only
    assert 1 <= steps <= 10 and fakes.min() >= 0 and fakes.max() <= 1
    with torch.no_grad():
        assert torch.sigmoid(d(noise)).mean() < 0.5  # ... from the noise it starts from
        assert d(fakes).mean() > d(noise).mean() + 1.0  # the optimisation raises the real logit


def test_compile_refused_for_double_backward_with_the_option_named():
    with pytest.raises(UserError, match=r"CompileModules.*detach_latent"):
        CompileModules().setup(None, GON(nz=8, ngf=4), "fit")
    assert GON(nz=8, ngf=4, detach_latent=True).compile_targets() == ["decoder"]
    assert VAE(nz=8, ngf=4).compile_targets() == ["encoder", "decoder", "to_mu", "to_logvar"]


@pytest.mark.equality
def test_compile_callback_compiles_in_place(images):
    """The eager backend keeps this cheap: it traces with dynamo but generates no code."""
    pl.seed_everything(0)
    model = ConvAutoencoder(nz=8, ngf=4)
    reference = ConvAutoencoder(nz=8, ngf=4)
    reference.load_state_dict(model.state_dict())
    callback = CompileModules(backend="eager")
    pl.seed_everything(1)
    fit(model, images[:64], steps=2, callbacks=[callback])
    pl.seed_everything(1)
    fit(reference, images[:64], steps=2)
    assert callback.compiled == ["encoder", "decoder"]
    assert model.encoder._compiled_call_impl is not None
    assert model.state_dict().keys() == reference.state_dict().keys()  # checkpoints unchanged
    for a, b in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


SHRINK = {
    "ae": ["--model.init_args.nz", "16", "--model.init_args.ngf", "4"],
    "vae": ["--model.init_args.nz", "16", "--model.init_args.ngf", "4"],
    "gopt": [
        "--model.init_args.ndf",
        "4",
        "--model.init_args.input_steps",
        "2",
        "--model.init_args.reference_size",
        "64",
    ],
}
ROOTS = {"mnist": "mnist_root", "fashion": "fashion_root", "cifar": "cifar_root", "coil20": "coil20_root"}
CONFIG_NAMES = [f"{m}_{d}" for m in ("ae", "vae") for d in ROOTS] + ["gopt_mnist", "gopt_fashion"]


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_config_runs(name, request, tmp_path, monkeypatch):
    model, dataset = name.split("_")
    root = request.getfixturevalue(ROOTS[dataset])
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            *("fit", "--config", str(CONFIGS / f"{name}.yaml"), "--data.root", str(root), "--data.download", "false"),
            *("--trainer.fast_dev_run", "true", "--trainer.accelerator", "cpu", *SHRINK[model]),
        ]
    )
    assert cli.trainer.state.finished


def test_gopt_logs_sample_quality_and_checkpoints_on_it(mnist_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(
        [
            *("fit", "--config", str(CONFIGS / "gopt_mnist.yaml"), "--data.root", str(mnist_root)),
            *("--data.download", "false", "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2"),
            *("--trainer.limit_val_batches", "1", "--trainer.accelerator", "cpu", *SHRINK["gopt"]),
        ]
    )
    metrics = cli.trainer.callback_metrics
    assert {"val/sample_nn_sse", "val/real_nn_sse", "val/nn_ratio"} <= metrics.keys()
    assert metrics["val/nn_ratio"] > 0
    assert cli.trainer.checkpoint_callback.best_model_path.endswith(".ckpt")
