"""Own networks: a decoder and an encoder defined here, outside the package, in place of the built-in ones."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import yaml

from gon_lightning.cli import main
from gon_lightning.errors import UserError
from gon_lightning.models import GON, VAE, ConvAutoencoder, DetachedGON, VariationalGON
from gon_lightning.runs import load_checkpoint_file
from tests.cli_args import only_run
from tests.own_networks import PoolEncoder, UnboundedDecoder, UpDecoder, WrongSizeDecoder

UP = {"class_path": "tests.own_networks.UpDecoder", "init_args": {"width": 4}}
POOL = {"class_path": "tests.own_networks.PoolEncoder", "init_args": {"width": 4}}


def shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def test_a_network_is_given_by_class_path_class_partial_or_module():
    by_config = GON(nz=8, image_shape=(1, 16, 16), decoder=UP)
    by_partial = GON(nz=8, image_shape=(1, 16, 16), decoder=functools.partial(UpDecoder, width=4))
    by_module = GON(nz=8, image_shape=(1, 16, 16), decoder=UpDecoder(8, (1, 16, 16), width=4))
    assert isinstance(by_config.decoder, UpDecoder) and shapes(by_config) == shapes(by_partial) == shapes(by_module)
    # checkpoints record what rebuilds the network: the class path and its init args
    assert by_config.hparams["decoder"] == by_partial.hparams["decoder"] == UP
    assert GON(nz=8, decoder=UpDecoder).hparams["decoder"] == "tests.own_networks.UpDecoder"
    rebuilt = GON(**dict(by_config.hparams))
    assert shapes(rebuilt) == shapes(by_config)
    # a module built in Python cannot be rebuilt from a checkpoint: it must be passed again, and says so
    with pytest.raises(UserError, match=r"model.init_args.decoder: .*UpDecoder module made in Python.*pass it again"):
        GON(**dict(by_module.hparams))
    x = torch.rand(4, 1, 16, 16)
    assert by_config.reconstruct(x).shape == x.shape


def test_every_conv_model_takes_own_networks_at_any_size():
    x = torch.rand(3, 3, 16, 16)
    for model in (
        GON(nz=8, image_shape=(3, 16, 16), decoder=UP),
        DetachedGON(nz=8, image_shape=(3, 16, 16), decoder=UP),
        VariationalGON(nz=8, image_shape=(3, 16, 16), decoder=UP),
        ConvAutoencoder(nz=8, image_shape=(3, 16, 16), decoder=UP, encoder=POOL),
        VAE(nz=8, image_shape=(3, 16, 16), decoder=UP, encoder=POOL),
    ):
        assert isinstance(model.decoder, UpDecoder), type(model).__name__
        assert model.reconstruct(x).shape == x.shape and model.training_step(x, 0).isfinite()
    assert isinstance(VAE(nz=8, decoder=UP, encoder=PoolEncoder).encoder, PoolEncoder)
    # an own decoder beside the built-in encoder: the encoder keeps ngf and the paper's sizes
    mixed = ConvAutoencoder(nz=8, ngf=4, decoder=UP)
    assert mixed.encoder.net[0].out_channels == 4 and isinstance(mixed.decoder, UpDecoder)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"decoder": WrongSizeDecoder},
            "model.init_args.decoder: WrongSizeDecoder maps latents (2, 8) to (2, 1, 8, 8); GON needs (2, 1, 32, 32)",
        ),
        ({"decoder": UnboundedDecoder}, "GON decodes images in [0, 1] (end the decoder with a sigmoid)"),
        (
            {"decoder": {"class_path": "tests.nowhere.Decoder"}},
            "model.init_args.decoder: tests.nowhere.Decoder cannot be imported (ModuleNotFoundError",
        ),
        ({"decoder": UpDecoder, "ngf": 8}, "model.init_args.ngf shapes the built-in networks only"),
        ({"decoder": {"init_args": {"width": 4}}}, "model.init_args.decoder must name a class_path"),
        (
            {"decoder": torch.nn.Linear},
            "model.init_args.decoder: Linear(nz=8, image_shape=(1, 32, 32), **init_args) failed",
        ),
        (
            {"decoder": lambda nz, shape: torch.nn.Linear(nz + 1, 4)},
            "decoder: Linear fails on latents (2, 8) (RuntimeError",
        ),
    ],
    ids=["shape", "range", "import", "unused-option", "no-class-path", "cannot-build", "fails"],
)
def test_a_network_that_does_not_fit_is_refused_when_built(kwargs: dict, message: str):
    with pytest.raises(UserError) as raised:
        GON(nz=8, **kwargs)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_an_own_encoder_of_the_wrong_width_is_refused():
    message = r"model.init_args.encoder: PoolEncoder maps images \(2, 1, 32, 32\) to \(2, 5\); ConvAutoencoder needs"
    with pytest.raises(UserError, match=message):
        ConvAutoencoder(nz=8, decoder=UP, encoder=lambda nz, image_shape: PoolEncoder(5, image_shape))


def own_config(tmp_path: Path, model: str, root: Path) -> Path:
    """A config naming this file's networks, as a researcher writes one."""
    init_args: dict = {"nz": 8, "decoder": UP}
    if model == "ConvAutoencoder":
        init_args["encoder"] = POOL
    config = {
        "model": {"class_path": model, "init_args": init_args},
        "data": {
            "class_path": "MNISTDataModule",
            "init_args": {"root": str(root), "batch_size": 16, "image_size": 16, "download": False},
        },
        "trainer": {
            "accelerator": "cpu",
            "limit_train_batches": 2,
            "limit_val_batches": 1,
            "limit_test_batches": 1,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
            "logger": "CSVLogger",
        },
        "images": {"num_images": 4, "num_samples": 4, "interpolation_steps": 3},
    }
    path = tmp_path / f"{model}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
@pytest.mark.equality
@pytest.mark.parametrize("model", ["GON", "VariationalGON", "ConvAutoencoder"])
def test_own_networks_train_test_resume_exactly_and_export(model: str, mnist_root: Path, tmp_path: Path):
    config = own_config(tmp_path, model, mnist_root)
    straight, split = tmp_path / "straight", tmp_path / "split"
    main(["fit", "--config", str(config), f"--runs_root={straight}", "--trainer.max_epochs=2"])
    main(["fit", "--config", str(config), f"--runs_root={split}", "--trainer.max_epochs=1"])
    run = only_run(split)
    last = run / "checkpoints" / "last.ckpt"
    main(["fit", "--config", str(run / "config.yaml"), f"--ckpt_path={last}", "--trainer.max_epochs=2"])
    resumed, reference = (
        load_checkpoint_file(last),
        load_checkpoint_file(only_run(straight) / "checkpoints" / "last.ckpt"),
    )
    assert resumed["global_step"] == reference["global_step"] == 4
    assert resumed["hyper_parameters"]["decoder"] == UP
    for name, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    assert any(name.startswith("decoder.project") for name in reference["state_dict"])
    main(["test", "--config", str(run / "config.yaml"), f"--ckpt_path={last}"])
    assert "test/sse" in (run / "test_metrics.json").read_text()
    assert len(list((run / "images").rglob("*.png"))) > 0  # the panels work with an own network
    main(["export", f"--ckpt_path={last}", f"--out={tmp_path / 'export'}", "--num_images=4"])
    import gon_lightning

    loaded = gon_lightning.from_pretrained(tmp_path / "export", trust_remote_code=True)
    for name, tensor in resumed["state_dict"].items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.slow
@pytest.mark.equality
def test_an_own_decoder_under_ddp_steps_as_one_process(mnist_root: Path, tmp_path: Path):
    """2 CPU processes (gloo) x batch 128 against 1 process x batch 256, in float64, as tests/test_scale.py does for
    the built-in decoder: the allreduced gradients of an own decoder (no BatchNorm; summed inner loss) are the
    single process's."""
    from ddp_worker import Recorder

    from tests.test_scale import run_worker

    def args(out: Path, batch_size: int, *extra: str) -> list[str]:
        return [
            "--model=GON",
            "--model.nz=8",
            "--model.inner_reduction=sum",
            "--model.decoder=tests.own_networks.UpDecoder",
            "--model.decoder.width=4",
            "--data=MNISTDataModule",
            f"--data.root={mnist_root}",
            f"--data.batch_size={batch_size}",
            "--trainer.accelerator=cpu",
            "--trainer.max_steps=1",
            "--trainer.limit_val_batches=0",
            "--trainer.num_sanity_val_steps=0",
            "--trainer.logger=false",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--trainer.precision=64-true",
            f"--trainer.default_root_dir={out}",
            *extra,
        ]

    ddp, single = tmp_path / "ddp", tmp_path / "single"
    ddp.mkdir(), single.mkdir()
    run_worker(ddp, args(ddp, 128, "--trainer.devices=2", "--trainer.strategy=ddp"))
    cli = main(args(single, 256, "--trainer.devices=1"), run=False)
    cli.trainer.callbacks.append(Recorder(single))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    rank0, rank1 = torch.load(ddp / "rank0.pt"), torch.load(ddp / "rank1.pt")
    reference = torch.load(single / "rank0.pt")
    assert any(name.startswith("decoder.project") for name in reference["grads"])
    for name, grad in reference["grads"].items():
        torch.testing.assert_close(rank0["grads"][name], grad, rtol=1e-8, atol=1e-14)
        torch.testing.assert_close(rank1["grads"][name], grad, rtol=1e-8, atol=1e-14)


def test_the_cli_refuses_a_network_that_does_not_fit_in_one_line(mnist_root: Path, tmp_path: Path):
    args = [
        "fit",
        "--model=GON",
        "--model.init_args.nz=8",
        "--model.init_args.decoder=tests.own_networks.WrongSizeDecoder",
    ]
    args += ["--data=MNISTDataModule", f"--data.init_args.root={mnist_root}", "--data.init_args.download=false"]
    args += [f"--runs_root={tmp_path / 'runs'}", "--trainer.logger=CSVLogger"]
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert str(raised.value.code) == (
        "gon-lightning: error: model.init_args.decoder: WrongSizeDecoder maps latents (2, 8) to (2, 1, 8, 8); "
        "GON needs (2, 1, 32, 32) (B, *image_shape)"
    )
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
