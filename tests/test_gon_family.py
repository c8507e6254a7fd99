"""The GON family: DetachedGON, VariationalGON, ImplicitGON, the shared origin step, sampling and configs."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.models import GON, DetachedGON, ImplicitGON, OriginModel, VariationalGON
from gon_lightning.models.gon import paper_loss

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
NEW_CONFIGS = sorted(
    path
    for pattern in ("gon_detached_*.yaml", "vgon_*.yaml", "implicit_gon_*.yaml", "ablations/*.yaml")
    for path in CONFIGS.glob(pattern)
)

pytestmark = [pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning"), pytest.mark.usefixtures("one_thread")]


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def images(digits) -> dict[int, torch.Tensor]:
    """16 real digits in [0, 1] at 28 and 32 pixels."""
    x = torch.from_numpy(digits[0][:16]).float().div(255)[:, None]
    return {28: x, 32: F.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)}


def tiny(name: str, **kwargs) -> OriginModel:
    if name == "implicit":
        return ImplicitGON(nz=8, widths=[16, 16], image_shape=(1, 28, 28), **kwargs)
    cls = {"gon": GON, "detached": DetachedGON, "vgon": VariationalGON}[name]
    return cls(nz=8, ngf=4, image_shape=(1, 32, 32), **kwargs)


def train_losses(model: OriginModel, x: torch.Tensor, steps: int, lr: float) -> list[float]:
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps):
            loss = model.training_step(x, step)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return losses


# ---- parameter counts (docs/design.md, "The origin step") ---------------------------------------------------
def test_parameter_counts() -> None:
    assert params(DetachedGON(nz=256, ngf=16, image_shape=(1, 32, 32))) == 303_697
    assert params(VariationalGON(nz=256, ngf=16, image_shape=(1, 32, 32))) == 435_281
    assert params(ImplicitGON(nz=32, widths=[256, 256, 256, 256], image_shape=(1, 28, 28))) == 206_593


# ---- learning ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "kwargs", "lr"),
    [
        ("detached", {}, 5e-3),
        ("vgon", {}, 5e-3),
        ("implicit", {}, 2e-3),
        ("implicit", {"loss": "bce", "encoding": "nerf", "num_frequencies": 2}, 2e-3),
        ("implicit", {"encoding": "gaussian", "num_frequencies": 16, "fourier_sigma": 1.0}, 2e-3),
        ("implicit", {"latent_modulation": True, "learn_origin": True}, 2e-3),
    ],
)
def test_models_learn(images, name: str, kwargs: dict, lr: float) -> None:
    model = tiny(name, **kwargs)
    x = images[model.image_shape[-1]]
    losses = train_losses(model, x, 30, lr)
    start, end = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert end < 0.8 * start, losses


# ---- the origin step -----------------------------------------------------------------------------------------
@pytest.mark.equality
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_origin_gradient_matches_torch_func(images, reduction: str) -> None:
    model = tiny("implicit", inner_reduction=reduction)
    x = images[28][:4]

    def inner(z0: torch.Tensor) -> torch.Tensor:
        loss, _ = model.latent_loss(z0, x)
        return loss.sum() if reduction == "sum" else loss.mean()

    expected = -torch.func.grad(inner)(torch.zeros(4, model.nz))
    torch.testing.assert_close(model.encode(x, create_graph=False), expected)


def test_origin_gradient_matches_finite_differences(images) -> None:
    torch.manual_seed(0)
    model = GON(nz=6, ngf=4, norm="none", image_shape=(1, 32, 32)).double()
    x = images[32][:3].double()
    z = model.encode(x, create_graph=False)
    eps = 1e-6
    for sample, dim in [(0, 0), (1, 3), (2, 5)]:
        delta = torch.zeros(3, 6, dtype=torch.float64)
        delta[sample, dim] = eps
        plus = paper_loss(model.decode_latents(delta), x).mean()
        minus = paper_loss(model.decode_latents(-delta), x).mean()
        assert z[sample, dim].item() == pytest.approx(-(plus - minus).item() / (2 * eps), rel=1e-5, abs=1e-10)


@pytest.mark.equality
def test_several_inner_steps_take_several_steps(images) -> None:
    x = images[28][:4]
    one = tiny("implicit")
    two = tiny("implicit", inner_steps=2, inner_lr=0.5)
    two.load_state_dict(one.state_dict())
    z1 = one.encode(x, create_graph=False)
    one.inner_lr = 0.5
    half = one.encode(x, create_graph=False)
    torch.testing.assert_close(half, 0.5 * z1)
    (grad,) = torch.autograd.grad(one.latent_loss(half.requires_grad_(), x)[0].mean(), half)
    torch.testing.assert_close(two.encode(x, create_graph=False), half - 0.5 * grad)


def test_learnable_origin_learns(images) -> None:
    model = tiny("implicit", learn_origin=True)
    loss = model.training_step(images[28][:8], 0)
    loss.backward()
    assert model.origin.grad is not None and model.origin.grad.abs().sum() > 0


@pytest.mark.equality
def test_detached_and_full_gon_differ_only_in_second_order_term(images) -> None:
    torch.manual_seed(0)
    full = tiny("gon", norm="group")
    detached = tiny("detached", norm="group")
    detached.load_state_dict(full.state_dict())
    x = images[32][:8]
    grads = {}
    for name, model in (("full", full), ("detached", detached)):
        loss = model.training_step(x, 0)
        loss.backward()
        grads[name] = (loss.detach(), torch.cat([p.grad.flatten() for p in model.parameters()]))
    torch.testing.assert_close(grads["full"][0], grads["detached"][0])  # same latents, same outer loss
    assert not torch.allclose(grads["full"][1], grads["detached"][1], rtol=1e-3, atol=1e-6)
    assert detached.hparams.detach_latent is True and full.hparams.detach_latent is False


@pytest.mark.equality
def test_robust_variant_is_independent_of_the_batch(images) -> None:
    """GroupNorm + batch-summed inner loss in eval mode: an image's reconstruction ignores its batch-mates.

    In float64: mathematical equality across batch sizes, which in float32 would rest on the CPU's kernels
    summing in the same order for 4 and 8 images."""
    x = images[32][:8].double()
    robust = tiny("gon", norm="group", inner_reduction="sum", norm_eval="running").double().eval()
    torch.testing.assert_close(robust.reconstruct(x)[:4], robust.reconstruct(x[:4]))
    paper = tiny("gon").double().eval()  # BatchNorm, batch-mean inner loss, batch statistics (the reference protocol)
    with paper.evaluation_protocol():
        assert not torch.allclose(paper.reconstruct(x)[:4], paper.reconstruct(x[:4]))


# ---- V-GON ---------------------------------------------------------------------------------------------------
def test_vgon_elbo_by_hand() -> None:
    """Decoder output 0.5 everywhere (last conv zeroed), logvar 0, mu 1: nelbo = P ln 2 + nz / 2."""
    model = VariationalGON(nz=8, ngf=4, image_shape=(1, 32, 32), norm_eval="running")
    with torch.no_grad():
        last = model.decoder.net[-2]
        last.weight.zero_()
        last.bias.zero_()
        for linear in (model.to_mu, model.to_logvar):
            linear.weight.zero_()
            linear.bias.zero_()
        model.to_mu.bias.fill_(1.0)
    x = torch.rand(16, 1, 32, 32).round()
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False, inference_mode=False)
    (metrics,) = trainer.test(model, DataLoader(x, batch_size=8), verbose=False)
    expected = 32 * 32 * math.log(2) + 8 / 2
    assert metrics["test/elbo"] == pytest.approx(expected, rel=1e-5)
    assert metrics["test/bpd"] == pytest.approx(expected / (32 * 32 * math.log(2)), rel=1e-5)
    assert metrics["test/sse"] == pytest.approx(((0.5 - x) ** 2).flatten(1).sum(1).mean().item(), rel=1e-5)


@pytest.mark.parametrize("eval_latent", ["sample", "mean"])
def test_vgon_reconstruction_decodes_a_posterior_sample_or_mu(images, eval_latent) -> None:
    """ "sample" (default) is the references' train-mode protocol behind the published SSE; "mean" decodes mu."""
    model = tiny("vgon", eval_latent=eval_latent).eval()
    x = images[32][:8]
    torch.manual_seed(0)
    mu, logvar = model.posterior(model.encode(x, create_graph=False))
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if eval_latent == "sample" else mu
    torch.manual_seed(0)
    torch.testing.assert_close(model.reconstruct(x), model.decoder(z))
    assert tiny("vgon").eval_latent == "sample"
    with pytest.raises(UserError, match="eval_latent"):
        tiny("vgon", eval_latent="mode")


# ---- generation interface ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gon", "detached", "vgon", "implicit"])
def test_sample_and_interpolate_shapes(images, name: str) -> None:
    model = tiny(name)
    x = images[model.image_shape[-1]]
    if model.fits_latent_gaussian:
        with pytest.raises(NotImplementedError, match="no training latents"):
            model.sample(2)
    train_losses(model, x, 2, 1e-3)
    model.eval()
    samples = model.sample(5)
    assert samples.shape == (5, *model.image_shape)
    assert samples.min() >= 0 and samples.max() <= 1
    path = model.interpolate(x[:2], x[2:4], steps=4)
    assert path.shape == (4, 2, *model.image_shape)
    assert path.min() >= 0 and path.max() <= 1
    assert model.reconstruct(x[:3]).shape == (3, *model.image_shape)


def test_latent_gaussian_fits_training_latents(images) -> None:
    model = tiny("implicit")
    z = torch.randn(500, model.nz) @ torch.randn(model.nz, model.nz) + 3
    model.track_latents(z)
    mean, scale = model.latent_gaussian()
    torch.testing.assert_close(mean.float(), z.mean(0), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close((scale @ scale.T).float(), torch.cov(z.T), rtol=1e-3, atol=1e-3)
    model.on_train_epoch_start()  # a new epoch starts new sums; the fit stays until it ends
    assert model.latent_count == 0


@pytest.mark.parametrize("size", [28, 64])
def test_render_super_resolution(images, size: int) -> None:
    model = tiny("implicit")
    z = model.encode_images(images[28][:3])
    out = model.render(z, size)
    assert out.shape == (3, 1, size, size) and out.min() >= 0 and out.max() <= 1
    if size == 28:  # render at the training size is the decoder
        torch.testing.assert_close(out, model.decode_latents(z))


@pytest.mark.parametrize("name", ["gon", "implicit"])
def test_sampling_survives_checkpoint(images, tmp_path: Path, name: str) -> None:
    model = tiny(name)
    x = images[model.image_shape[-1]]
    trainer = pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.fit(model, DataLoader(x, batch_size=8))
    assert model.latent_fitted == 16
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    restored = type(model).load_from_checkpoint(tmp_path / "model.ckpt")
    for buffer in ("latent_mean", "latent_cov", "latent_fitted"):
        torch.testing.assert_close(getattr(restored, buffer), getattr(model, buffer))
    restored.eval()
    torch.manual_seed(1)
    a = restored.sample(4)
    torch.manual_seed(1)
    model.eval()
    torch.testing.assert_close(a, model.sample(4))


def test_detached_gon_checkpoint_round_trip(tmp_path: Path) -> None:
    model = tiny("detached")
    trainer = pl.Trainer(logger=False, enable_checkpointing=False, max_epochs=0, enable_progress_bar=False)
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "d.ckpt")
    restored = DetachedGON.load_from_checkpoint(tmp_path / "d.ckpt")
    assert restored.detach_latent and restored.nz == 8


# ---- configs -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("config", NEW_CONFIGS, ids=lambda p: p.stem)
def test_config_instantiates(config: Path, tmp_path: Path) -> None:
    cli = main(["--config", str(config), "--data.root", str(tmp_path), "--trainer.logger", "false"], run=False)
    assert isinstance(cli.model, OriginModel)
    assert cli.model.image_shape == cli.datamodule.dims
    assert cli.model.lr == 2e-4 and cli.datamodule.batch_size == 64


def test_config_numbers() -> None:
    assert {p.stem for p in NEW_CONFIGS} >= {
        f"{m}_{d}" for m in ("gon_detached", "vgon", "implicit_gon") for d in ("mnist", "fashion", "cifar", "coil20")
    }


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("implicit_gon_mnist.yaml", ["--model.init_args.nz", "8", "--model.init_args.widths", "[16, 16]"]),
        ("vgon_mnist.yaml", ["--model.init_args.nz", "8", "--model.init_args.ngf", "4"]),
    ],
)
def test_config_fast_dev_run(mnist_root: Path, tmp_path: Path, config: str, overrides: list[str]) -> None:
    args = ["fit", "--config", str(CONFIGS / config), "--data.root", str(mnist_root), "--data.batch_size", "16"]
    args += ["--trainer.fast_dev_run", "true", "--trainer.logger", "false", *overrides]
    cli = main(args)
    metrics = cli.trainer.callback_metrics
    assert "train/loss" in metrics and "val/sse" in metrics
    if isinstance(cli.model, VariationalGON):
        assert "val/elbo" in metrics and "val/bpd" in metrics
