"""The convolutional models at 32, 64, 128 and 256 px: sizes, parameter counts, refusals, the 32-px guard, runs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from gon_lightning.callbacks import PredictionWriter, make_panels
from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.models import (
    GON,
    VAE,
    ConvAutoencoder,
    DetachedGON,
    GenerativeOptimizationNetwork,
    ImplicitGON,
    VariationalGON,
)
from gon_lightning.nn.conv import IMAGE_SIZES, ConvDecoder, ConvEncoder, hidden_widths
from tests.cli_args import base_args

CONV_MODELS = [GON, DetachedGON, VariationalGON, ConvAutoencoder, VAE, GenerativeOptimizationNetwork]


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def fingerprint(model: torch.nn.Module) -> str:
    """Every state_dict entry's name, shape, dtype and bytes, in order: equal only if bit for bit the same."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


# Recorded from main before the networks learnt other sizes (commit 90acb1a): seed 0, then the model. Torch's CPU
# initialisers are deterministic, so a change here means the 32-px networks changed (or torch's initialisers did).
FINGERPRINTS_32 = {
    "GON": (GON, {}, "7291e7651d82c113"),
    "GON-rgb-group": (GON, {"image_shape": (3, 32, 32), "norm": "group", "nz": 64, "ngf": 8}, "c0bca41a83c6fde8"),
    "DetachedGON": (DetachedGON, {}, "7291e7651d82c113"),
    "VariationalGON": (VariationalGON, {}, "814ed4ddfb93a136"),
    "ConvAutoencoder": (ConvAutoencoder, {}, "a3d42eece1f1b32a"),
    "VAE-rgb": (VAE, {"image_shape": (3, 32, 32)}, "e2e37bdabd9d8b57"),
    "GenerativeOptimizationNetwork": (GenerativeOptimizationNetwork, {}, "cf24ae370b2c5235"),
}


@pytest.mark.parametrize("name", FINGERPRINTS_32)
def test_32px_networks_are_bit_for_bit_the_papers(name: str) -> None:
    cls, kwargs, expected = FINGERPRINTS_32[name]
    torch.manual_seed(0)
    assert fingerprint(cls(**kwargs)) == expected


# Paper widths (nz 256, ngf 16; ndf 32), 3 channels; docs/gon_family.md and docs/baselines.md print this table.
PARAMETERS_RGB = {
    # size: (GON and detached GON, V-GON, autoencoder, VAE, VAE ngf 8, Generative Optimization Network)
    32: (304_211, 435_795, 608_675, 740_259, 415_571, 167_649),
    64: (697_811, 829_395, 1_395_875, 1_527_459, 743_635, 694_241),
    128: (1_747_155, 1_878_739, 3_494_563, 3_626_147, 1_530_835, 2_796_001),
    256: (4_894_419, 5_026_003, 9_789_091, 9_920_675, 3_629_523, 11_193_825),
}


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_parameter_counts_per_size(size: int) -> None:
    shape = (3, size, size)
    models = [
        GON(image_shape=shape),
        VariationalGON(image_shape=shape),
        ConvAutoencoder(image_shape=shape),
        VAE(image_shape=shape),
        VAE(image_shape=shape, ngf=8),
        GenerativeOptimizationNetwork(image_shape=shape),
    ]
    assert tuple(n_params(m) for m in models) == PARAMETERS_RGB[size]
    assert n_params(DetachedGON(image_shape=shape)) == PARAMETERS_RGB[size][0]


def test_widths_double_towards_the_latent() -> None:
    assert hidden_widths(16, 32) == [64, 32, 16]  # the paper's
    assert hidden_widths(16, 64) == [128, 64, 32, 16]  # DCGAN's 64-px generator, at ngf 16
    assert hidden_widths(4, 256) == [128, 64, 32, 16, 8, 4]


@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_networks_map_each_size(size: int) -> None:
    decoder, encoder = ConvDecoder(8, 2, 3, size), ConvEncoder(8, 2, 3, size)
    images = decoder(torch.randn(2, 8))
    assert images.shape == (2, 3, size, size)
    assert encoder(images).shape == (2, 8)
    discriminator = GenerativeOptimizationNetwork(ndf=2, image_shape=(3, size, size)).discriminator
    assert discriminator(images).shape == (2,)
    # one stride-2 layer per doubling after the 4x4 projection
    strides = [m.stride for m in decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert strides == [(1, 1)] + [(2, 2)] * (size.bit_length() - 3)


@pytest.mark.parametrize("cls", CONV_MODELS)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 48, 48), (3, 512, 512), (1, 16, 16)])
def test_other_sizes_are_refused_naming_the_valid_ones(cls, shape) -> None:
    with pytest.raises(UserError, match="32, 64, 128, 256"):
        cls(image_shape=shape)


def test_non_square_images_are_refused() -> None:
    with pytest.raises(UserError, match="square"):
        GON(image_shape=(1, 64, 32))


@pytest.mark.parametrize("size", [64, 256])
def test_group_norm_covers_every_width(size: int) -> None:
    model = GON(nz=8, ngf=2, norm="group", image_shape=(1, size, size))
    widths = [m.num_channels for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert widths == hidden_widths(2, size)
    with pytest.raises(UserError, match="ngf"):
        GON(nz=8, ngf=5, norm="group", image_shape=(1, size, size))


CONV_TINY = ["--model.init_args.nz=8", "--model.init_args.ngf=2"]
TINY = {
    "GON": CONV_TINY,
    "DetachedGON": CONV_TINY,
    "VariationalGON": CONV_TINY,
    "ConvAutoencoder": CONV_TINY,
    "VAE": CONV_TINY,
    "GenerativeOptimizationNetwork": [
        *("--model.init_args.ndf=2", "--model.init_args.input_steps=2", "--model.init_args.reference_size=32"),
        *("--checkpoint.monitor=val/nn_ratio", "--checkpoint.filename=epoch{epoch:04d}"),
    ],
    "ImplicitGON": ["--model.init_args.nz=8", "--model.init_args.widths=[8, 8]", "--model.init_args.render_chunk=1000"],
}


def run_at(size: int, name: str, mnist_root: Path, tmp_path: Path):
    """Two training steps, one validation batch and one test batch at `size` px (fake MNIST, resized)."""
    args = base_args(mnist_root, tmp_path / "runs", f"--data.init_args.image_size={size}", logger="false")
    args = [a for a in args if not a.startswith("--model")] + [f"--model={name}", *TINY[name]]
    cli = main(args)
    assert cli.trainer.state.finished
    metrics = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    assert cli.model.image_shape == (1, size, size)
    return metrics


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("name", TINY)
def test_fit_and_test_at_larger_sizes(name: str, size: int, mnist_root: Path, tmp_path: Path) -> None:
    metrics = run_at(size, name, mnist_root, tmp_path)
    key = "test/nn_ratio" if name == "GenerativeOptimizationNetwork" else "test/sse"
    assert torch.isfinite(torch.tensor(metrics[key]))


# ---- the implicit GON: trains at any size, renders at any size, in chunks where no gradient is taken ------------
@pytest.mark.parametrize("kwargs", [{}, {"encoding": "nerf", "latent_modulation": True, "loss": "bce"}])
def test_chunked_renders_are_the_unchunked_ones(kwargs: dict) -> None:
    torch.manual_seed(0)
    whole = ImplicitGON(nz=8, widths=[16, 16], image_shape=(3, 32, 32), **kwargs)
    chunked = ImplicitGON(nz=8, widths=[16, 16], image_shape=(3, 32, 32), render_chunk=100, **kwargs)
    chunked.load_state_dict(whole.state_dict())
    x = torch.rand(4, 3, 32, 32)
    z = whole.encode_images(x)
    torch.testing.assert_close(chunked.encode_images(x), z)
    for size in (32, 37):  # 37 x 37 = 13 chunks of 100 and one of 69
        torch.testing.assert_close(chunked.render(z, size), whole.render(z, size))
    with torch.no_grad():
        torch.testing.assert_close(chunked.reconstruct(x), whole.reconstruct(x))
    # a training step takes gradients through every pixel: chunking does not apply, the loss is the same
    torch.manual_seed(1)
    loss = whole.training_step(x, 0)
    torch.manual_seed(1)
    assert chunked.training_step(x, 0).item() == loss.item()


def test_render_chunk_must_be_positive() -> None:
    with pytest.raises(UserError, match="render_chunk"):
        ImplicitGON(render_chunk=0)


# ---- panels stay readable at large images ---------------------------------------------------------------------
@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_panels_stay_within_their_side(size: int) -> None:
    model = GON(nz=8, ngf=2, image_shape=(1, size, size))
    model.sample = lambda n, sampler=None: torch.rand(n, 1, size, size)
    model.render = lambda z, render_size: torch.rand(len(z), 1, render_size, render_size)
    x = torch.rand(16, 1, size, size)  # the defaults: 16 originals, 16 samples, 8 interpolation steps
    if size == 256:
        with pytest.warns(UserWarning, match="keep within 1024 px a side"):
            grids = make_panels(model, x)
    else:
        grids = make_panels(model, x)
    limit = 1024 + 2 * 1024 // size + 1  # the images, plus 1 px padding around each
    assert all(max(grid.shape[-2:]) <= limit for grid in grids.values()), {k: g.shape for k, g in grids.items()}
    cell = size + 1
    if size <= 128:  # the defaults fit whole: 8 columns of pairs, 4 x 4 samples, 4 rows of 8 steps
        assert grids["reconstructions"].shape[-2:] == (4 * cell + 1, 8 * cell + 1)
        assert grids["samples"].shape[-2:] == (4 * cell + 1, 4 * cell + 1)
        assert grids["interpolations"].shape[-2:] == (4 * cell + 1, 8 * cell + 1)
    else:  # 4 a side: 8 reconstructions (4 rows), 16 samples, 4 steps
        assert grids["reconstructions"].shape[-2:] == (4 * cell + 1, 4 * cell + 1)
        assert grids["samples"].shape[-2:] == (4 * cell + 1, 4 * cell + 1)
        assert grids["interpolations"].shape[-2:] == (4 * cell + 1, 4 * cell + 1)


def test_panels_keep_whole_pairs_in_prediction_grids(tmp_path: Path) -> None:
    from pytorch_lightning import Trainer
    from torchvision.io import read_image

    writer = PredictionWriter(output_dir=str(tmp_path), num_samples=4)
    model = GON(nz=8, ngf=2, image_shape=(1, 128, 128))
    batch = torch.rand(6, 1, 128, 128)
    writer.write_on_batch_end(Trainer(logger=False), model, batch.clone(), None, batch, 1, 0)
    grid = read_image(str(tmp_path / "reconstructions-0001.png"))
    assert grid.shape[-1] == 8 * 129 + 1 and grid.shape[-2] == 2 * 129 + 1  # 4 pairs on a row at 128 px


@pytest.mark.parametrize("size", [28, 128])
def test_super_resolution_panels_render_at_twice_the_side_by_default(size: int) -> None:
    model = ImplicitGON(nz=4, widths=[8], image_shape=(1, size, size))
    x = torch.rand(4, 1, size, size)
    assert make_panels(model, x)["superres"].shape[-2:] == (2 * (2 * size + 1) + 1, 4 * (2 * size + 1) + 1)
    assert make_panels(model, x, render_size=48)["superres"].shape[-2] == 2 * 49 + 1


@pytest.mark.parametrize("cls", [GON, ConvAutoencoder])
def test_models_learn_at_64px(cls, digits) -> None:
    from torchvision.transforms.v2.functional import resize

    x = resize(torch.from_numpy(digits[0][:32]).unsqueeze(1), [64, 64], antialias=True).float() / 255
    torch.manual_seed(0)
    model = cls(nz=16, ngf=4, image_shape=(1, 64, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for step in range(30):
        loss = model.training_step(x, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.5 * sum(losses[:3]), losses
