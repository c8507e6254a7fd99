"""The inner loop's options (several steps, Meta-SGD), the functa preset, pixel subsampling and the inner-step curve."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from gon_lightning import origin_step
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.inner_curve import inner_step_curve
from gon_lightning.models import GON, ConvAutoencoder, DetachedGON, ImplicitGON, VariationalGON
from gon_lightning.models.gon import paper_loss
from gon_lightning.nn.pixels import gather_pixels, random_pixels
from gon_lightning.nn.siren import coordinate_grid

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
FAMILY = {"gon": GON, "detached": DetachedGON, "vgon": VariationalGON, "implicit": ImplicitGON}
SMALL = ["--model.init_args.nz", "8", "--model.init_args.widths", "[16, 16]", "--data.batch_size", "4"]

pytestmark = [pytest.mark.filterwarnings("ignore:.*self.log.*:UserWarning"), pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(3))


def tiny(name: str, **kwargs):
    if name == "implicit":
        return ImplicitGON(nz=8, widths=[16, 16], image_shape=(1, 28, 28), **kwargs)
    return FAMILY[name](nz=8, ngf=4, image_shape=(1, 32, 32), **kwargs)


def images_for(name: str, x: torch.Tensor) -> torch.Tensor:
    """The 28 px images, at 32 px for the convolutional models."""
    return x if name == "implicit" else F.interpolate(x, size=32)


def adam_steps(model, x: torch.Tensor, steps: int, loss_of=None) -> dict[str, torch.Tensor]:
    """Train `steps` Adam steps on `x` with `loss_of(model, x)` (default: the model's training_step)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(steps):
            loss = model.training_step(x, step) if loss_of is None else loss_of(model, x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # the weights and BatchNorm's statistics; not the sampling Gaussian, which only training_step tracks
    return {name: value.clone() for name, value in model.state_dict().items() if not name.startswith("latent_")}


# ---- options ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"inner_steps": 0}, "inner_steps"),
        ({"inner_lr": -1.0}, "inner_lr"),
        ({"inner_lr": "fast"}, "inner_lr"),
        ({"inner_lr_init": 0.1}, "inner_lr_init"),
        ({"inner_lr": "learned", "inner_lr_init": [0.1, 0.01]}, "inner_lr_init"),
        ({"inner_lr": "learned", "inner_lr_init": -0.5}, "inner_lr_init"),
    ],
)
@pytest.mark.parametrize("name", ["gon", "vgon", "implicit"])
def test_inner_loop_options_are_refused_in_one_line(name: str, kwargs: dict, named: str) -> None:
    with pytest.raises(UserError, match=f"model.init_args.{named}") as error:
        tiny(name, **kwargs)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"conditioning": "film"}, "conditioning"),
        ({"conditioning": "shift", "latent_modulation": True}, "latent_modulation"),
        ({"pixel_reduction": "max"}, "pixel_reduction"),
        ({"train_pixel_fraction": 0.0}, "train_pixel_fraction"),
        ({"train_pixel_fraction": 1.5}, "train_pixel_fraction"),
    ],
)
def test_implicit_options_are_refused_in_one_line(kwargs: dict, named: str) -> None:
    with pytest.raises(UserError, match=f"model.init_args.{named}") as error:
        tiny("implicit", **kwargs)
    assert "\n" not in str(error.value)


# ---- the default paths are what they were ----------------------------------------------------------------------
def test_default_gon_trains_as_the_plain_origin_step(x) -> None:
    """Three Adam steps of a default GON = three steps of the paper's loop written with `origin_step` alone."""
    x = F.interpolate(x, size=32)
    torch.manual_seed(0)
    ours = GON(nz=8, ngf=4, image_shape=(1, 32, 32))
    plain = GON(nz=8, ngf=4, image_shape=(1, 32, 32))
    plain.load_state_dict(ours.state_dict())

    def paper_step(model, x):
        z0 = torch.zeros(len(x), 8, requires_grad=True)
        z = origin_step(lambda z: paper_loss(model.decoder(z), x), z0).latents
        return paper_loss(model.decoder(z), x).mean()

    got, want = adam_steps(ours, x, 3), adam_steps(plain, x, 3, paper_step)
    assert all(torch.equal(got[name], want[name]) for name in want)


def test_default_implicit_gon_trains_as_the_reference_siren(x) -> None:
    """The reference implicit GON: SIREN([coordinates, z]), squared error summed over pixels, one step of size 1."""
    torch.manual_seed(0)
    ours, plain = tiny("implicit"), tiny("implicit")
    plain.load_state_dict(ours.state_dict())
    coords = coordinate_grid(28)

    def decode(model, z):
        inputs = torch.cat([coords.expand(len(z), -1, -1), z[:, None].expand(-1, len(coords), -1)], dim=-1)
        return model.siren(inputs).transpose(1, 2).unflatten(2, (28, 28))

    def reference_step(model, x):
        def inner(z):
            return (decode(model, z) - x).square().flatten(1).sum(1)

        z = origin_step(inner, torch.zeros(len(x), 8, requires_grad=True)).latents
        return inner(z).mean()

    got, want = adam_steps(ours, x, 3), adam_steps(plain, x, 3, reference_step)
    assert all(torch.equal(got[name], want[name]) for name in want)


# ---- Meta-SGD ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(FAMILY))
def test_meta_sgd_step_sizes_learn_and_stay_non_negative(name: str, x) -> None:
    torch.manual_seed(0)
    model = tiny(name, inner_steps=2, inner_lr="learned", inner_lr_init=[0.005, 0.1])
    raw = model.meta_sgd.raw
    assert raw.shape == (8,) and raw.min() >= 0.005 and raw.max() <= 0.1
    x = images_for(name, x)
    model.training_step(x, 0).backward()
    assert raw.grad is not None and raw.grad.abs().sum() > 0  # trained through the outer loss
    with torch.no_grad():
        raw[0] = -1.0  # a size pushed below zero is used as zero: that dimension stays at the origin
    assert model.inner_lr.min() == 0
    model.eval()
    assert torch.all(model.encode(x, create_graph=False)[:, 0] == 0)


def test_meta_sgd_starts_at_the_fixed_step_and_keeps_the_initial_weights(x) -> None:
    torch.manual_seed(0)
    fixed = tiny("gon", inner_steps=2, inner_lr=1.0)
    torch.manual_seed(0)
    learned = tiny("gon", inner_steps=2, inner_lr="learned")  # starts at 1, the fixed step it replaces
    torch.manual_seed(0)
    drawn = tiny("gon", inner_steps=2, inner_lr="learned", inner_lr_init=[0.005, 0.1])
    shared = fixed.state_dict()
    assert all(torch.equal(value, learned.state_dict()[key]) for key, value in shared.items())
    assert all(torch.equal(value, drawn.state_dict()[key]) for key, value in shared.items())  # the draw is forked
    assert torch.equal(learned.meta_sgd.raw, torch.ones(8))
    fixed.eval(), learned.eval()
    x = images_for("gon", x)
    torch.testing.assert_close(learned.encode(x, create_graph=False), fixed.encode(x, create_graph=False))


def test_learned_sizes_survive_an_export(tmp_path: Path, x) -> None:
    from gon_lightning.export import from_pretrained, save_pretrained

    model = tiny("implicit", inner_lr="learned", inner_lr_init=[0.005, 0.1], conditioning="shift", inner_steps=3)
    save_pretrained(model, tmp_path / "export")
    again = from_pretrained(tmp_path / "export")  # weights loaded strictly
    assert torch.equal(again.meta_sgd.raw, model.meta_sgd.raw) and again.conditioning == "shift"
    model.eval()
    assert torch.equal(again.encode_images(x), model.encode_images(x))


# ---- the functa preset -------------------------------------------------------------------------------------------
def test_functa_celeba_config_is_functas_recipe(celeba_root: Path) -> None:
    cli = main(["--config", str(CONFIGS / "functa_celeba64.yaml"), "--data.root", str(celeba_root)], run=False)
    model = cli.model
    assert isinstance(model, ImplicitGON) and model.conditioning == "shift" and model.origin is None
    assert model.inner_steps == 3 and model.meta_sgd is not None and model.siren.layers[0].w0 == 30
    assert [layer.linear.out_features for layer in model.siren.layers] == [512] * 15
    assert model.siren.layers[0].linear.in_features == 2  # the coordinates alone: z enters as shifts
    assert cli.datamodule.dims == (3, 64, 64)


@pytest.mark.parametrize("config", ["functa_celeba64.yaml", "functa_folder.yaml"])
def test_functa_configs_run_a_step(config: str, celeba_root: Path, image_folder_root: Path) -> None:
    root = celeba_root if "celeba" in config else image_folder_root
    args = ["fit", "--config", str(CONFIGS / config), "--data.root", str(root), *SMALL]
    cli = main([*args, "--trainer.fast_dev_run", "true", "--trainer.logger", "false"])
    assert "train/loss" in cli.trainer.callback_metrics and "val/psnr" in cli.trainer.callback_metrics
    assert cli.model.meta_sgd is not None and cli.model.inner_steps == 3


def test_shift_conditioning_leaves_the_siren_unmodulated_at_the_origin(x) -> None:
    torch.manual_seed(0)
    model = tiny("implicit", conditioning="shift")
    zero = torch.zeros(2, 8)
    coords = coordinate_grid(28)[None].expand(2, -1, -1)
    unmodulated = coords
    for layer in model.siren.layers:
        unmodulated = layer(unmodulated)
    assert torch.equal(model._siren_at(zero, coordinate_grid(28)), model.siren.out(unmodulated))
    z = torch.randn(2, 8)  # a latent shifts the pre-activation: sin(w0 (W x + b + shift))
    shift = model.siren.modulation(z)[:, None, :16]
    first = torch.sin(30 * (model.siren.layers[0].linear(coords) + shift))
    torch.testing.assert_close(model.siren.layers[0](coords, 30 * shift), first)


# ---- pixel subsampling -------------------------------------------------------------------------------------------
def test_subsampling_uses_only_the_sampled_pixels(x) -> None:
    torch.manual_seed(0)
    model = tiny("implicit", train_pixel_fraction=0.25, inner_steps=2)
    torch.manual_seed(5)
    index = random_pixels(len(x), 28 * 28, 0.25)  # what the step will draw
    assert index.shape == (8, 196)
    other = x.clone().flatten(2)
    unsampled = torch.ones_like(other, dtype=torch.bool).scatter_(2, index[:, None], False)
    other[unsampled] = 1 - other[unsampled]  # every pixel the step does not sample, changed
    other = other.view_as(x)
    assert torch.equal(gather_pixels(other, index), gather_pixels(x, index))
    torch.manual_seed(5)
    loss = model.training_step(x, 0)
    torch.manual_seed(5)
    assert torch.equal(model.training_step(other, 0), loss)
    torch.manual_seed(5)
    full = tiny("implicit", inner_steps=2)
    full.load_state_dict(model.state_dict())
    assert not torch.equal(full.training_step(other, 0), full.training_step(x, 0))  # the full step sees them


def test_subsampling_estimates_the_whole_loss_and_evaluates_every_pixel(x) -> None:
    torch.manual_seed(0)
    sampled = tiny("implicit", train_pixel_fraction=0.5)
    full = tiny("implicit")
    full.load_state_dict(sampled.state_dict())
    z = torch.randn(len(x), 8) * 0.1
    whole = full.latent_loss(z, x)[0]
    draws = []
    for seed in range(40):
        torch.manual_seed(seed)
        sampled._train_pixels = random_pixels(len(x), 28 * 28, 0.5)
        draws.append(sampled.latent_loss(z, x)[0])
    sampled._train_pixels = None
    torch.testing.assert_close(torch.stack(draws).mean(0), whole, rtol=0.05, atol=0)  # scaled: unbiased
    sampled.eval(), full.eval()
    assert torch.equal(sampled.reconstruct(x), full.reconstruct(x))  # evaluation: every pixel, the same model


# ---- the inner-step curve ----------------------------------------------------------------------------------------
def test_curve_at_the_trained_steps_is_the_test_metric(x) -> None:
    torch.manual_seed(0)
    model = tiny("gon", inner_steps=2)
    images = images_for("gon", x)
    batches = [images[:4], images[4:]]
    rows = inner_step_curve(model, batches, steps=(0, 2, 3))
    assert [row["steps"] for row in rows] == [0, 2, 3] and model.inner_steps == 2
    for batch in batches:
        model.test_step(batch, 0)
    assert rows[1]["psnr"] == pytest.approx(model.test_metrics["psnr"].compute().item(), rel=1e-6)
    with model.evaluation_protocol():
        origin = model.decode_latents(torch.zeros(4, 8))  # 0 steps: the origin decoded (one image for every input)
    assert rows[0]["sse"] == pytest.approx((origin.repeat(2, 1, 1, 1) - images).square().sum((1, 2, 3)).mean().item())
    # a SIREN: the conv GON's BatchNorm, over the batch, undoes the scale of its (near-parallel) latents
    sized = inner_step_curve(tiny("implicit"), [x], steps=(1,), step_sizes=(0.5, 2.0))
    assert [row["step_size"] for row in sized] == [0.5, 2.0] and sized[0]["sse"] != sized[1]["sse"]


def test_curve_refuses_a_model_without_inner_loop(x) -> None:
    with pytest.raises(UserError, match="no inner loop"):
        inner_step_curve(ConvAutoencoder(nz=8, ngf=4, image_shape=(1, 32, 32)), [x])
    with pytest.raises(UserError, match="--steps"):
        inner_step_curve(tiny("implicit"), [x], steps=(-1,))


@pytest.mark.slow  # a one-step fit, then the script in a fresh process
def test_inner_steps_script_prints_and_writes_the_curve(tmp_path: Path, mnist_root: Path) -> None:
    import json
    import subprocess
    import sys

    args = ["fit", "--config", str(CONFIGS / "implicit_gon_mnist.yaml"), "--data.root", str(mnist_root), *SMALL]
    args += ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "1", "--trainer.logger", "false"]
    args += ["--runs_root", str(tmp_path / "runs")]
    main(args)
    (run,) = (tmp_path / "runs").iterdir()
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "inner_steps.py"
    command = [sys.executable, str(script), "--config", str(run / "config.yaml")]
    command += ["--ckpt_path", str(run / "checkpoints" / "last.ckpt"), "--steps", "0", "1", "--limit_batches", "1"]
    done = subprocess.run([*command, "--out", str(tmp_path / "curve.json")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 1 (trained) | 1.0 |" in done.stdout
    rows = json.loads((tmp_path / "curve.json").read_text())["rows"]
    assert [row["steps"] for row in rows] == [0, 1] and all(row["psnr"] > 0 and row["sse"] > 0 for row in rows)
    assert f"| {rows[1]['sse']:.3f} | {rows[1]['psnr']:.2f} |" in done.stdout
    refused = subprocess.run([*command, "--step_sizes", "0"], capture_output=True, text=True)
    assert refused.returncode != 0 and refused.stderr.strip().count("\n") == 0 and "--step_sizes" in refused.stderr
