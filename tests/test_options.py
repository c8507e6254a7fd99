"""Every option documented, abstract bases refused, bad options refused in one short message leaving nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from jsonargparse import ArgumentParser

import gon_lightning.data as data
import gon_lightning.models as models
from gon_lightning.callbacks import BestAndLastCheckpoint, CompileModules, ImagePanels, PredictionWriter
from gon_lightning.cli import main
from gon_lightning.parser import choices_of, options_of

MODELS = [getattr(models, name) for name in choices_of(models.ImageModel)]
DATAMODULES = [getattr(data, name) for name in choices_of(data.ImageDataModule)]
CALLBACKS = [BestAndLastCheckpoint, ImagePanels, PredictionWriter, CompileModules]  # ChannelsLast has no options


def test_every_concrete_class_is_a_choice():
    assert {cls.__name__ for cls in MODELS} == {
        "GON",
        "DetachedGON",
        "VariationalGON",
        "ImplicitGON",
        "ConvAutoencoder",
        "VAE",
        "GenerativeOptimizationNetwork",
    }
    assert {cls.__name__ for cls in DATAMODULES} == {
        "MNIST5kDataModule",
        "MNISTDataModule",
        "FashionMNISTDataModule",
        "CIFAR10DataModule",
        "COIL20DataModule",
        "CelebADataModule",
        "ImageFolderDataModule",
    }


@pytest.mark.parametrize("cls", MODELS + DATAMODULES + CALLBACKS, ids=lambda cls: cls.__name__)
def test_every_option_has_help(cls: type):
    parser = ArgumentParser()
    parser.add_class_arguments(cls, "x")
    options = [action for action in parser._actions if action.dest.startswith("x.")]
    assert options, f"{cls.__name__} offers no options"
    undocumented = [action.dest[2:] for action in options if not (action.help or "").strip()]
    assert not undocumented, f"{cls.__name__}: no help for {undocumented}"


def test_shared_options_reach_every_model():
    conv = {"nz", "ngf", "activation", "norm", "image_shape", "lr", "norm_eval"}
    for name in ("GON", "DetachedGON", "VariationalGON", "ConvAutoencoder", "VAE"):
        assert conv <= set(options_of(f"gon_lightning.models.{name}")), name
    assert {"inner_steps", "inner_lr", "nz", "image_shape", "lr"} <= set(options_of("gon_lightning.models.ImplicitGON"))


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_saved_hyperparameters_rebuild_the_model(cls: type):
    shape = (1, 28, 28) if cls is models.ImplicitGON else (1, 32, 32)
    model = cls(image_shape=shape)
    rebuilt = cls(**dict(model.hparams))
    assert dict(rebuilt.hparams) == dict(model.hparams)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


def test_detached_gon_loads_the_hyperparameters_its_checkpoints_hold():
    old = {  # hyper_parameters of a DetachedGON checkpoint written before options were declared once
        "nz": 8,
        "ngf": 4,
        "activation": "elu",
        "norm": "batch",
        "inner_reduction": "mean",
        "init_sigma": 0.0,
        "detach_latent": True,
        "image_shape": (1, 32, 32),
        "lr": 0.0002,
        "norm_eval": "batch",
    }
    model = models.DetachedGON(**old)
    added_since = {"decoder": None, "gmm_components": 10, "inner_steps": 1, "inner_lr": 1.0, "inner_lr_init": None}
    assert model.detach_latent and dict(model.hparams) == {**old, **added_since}


@pytest.mark.parametrize(
    "name",
    ["ImageModel", "OriginModel", "LatentPrior", "ImageDataModule", "TorchvisionDataModule"],
    ids=lambda name: name,
)
def test_abstract_bases_are_neither_listed_nor_accepted(name: str, capsys: pytest.CaptureFixture):
    group = "data" if "Data" in name else "model"
    with pytest.raises(SystemExit) as raised:
        main(["fit", f"--{group}", name])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert f"--{group} {name}: not one of" in err
    listed = err.split("not one of", 1)[1]
    assert ("GON" in listed if group == "model" else "MNISTDataModule" in listed) and name not in listed
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    help_text = capsys.readouterr().out
    assert f".{name}," not in help_text and f".{name})" not in help_text


def quick_args(root: Path, runs: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--model=GON",
        "--model.init_args.nz=8",
        "--model.init_args.ngf=4",
        "--data=MNISTDataModule",
        f"--data.init_args.root={root}",
        "--data.init_args.download=false",
        f"--runs_root={runs}",
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=1",
        "--trainer.limit_val_batches=1",
        *extra,
    ]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--model.init_args.nz", "-1", "model.init_args.nz must be a positive integer, got -1"),
        ("--model.init_args.ngf", "0", "model.init_args.ngf must be a positive integer, got 0"),
        ("--model.init_args.lr", "-1", "model.init_args.lr must be positive, got -1.0"),
        ("--model.init_args.init_sigma", "-0.5", "model.init_args.init_sigma must be >= 0, got -0.5"),
        ("--data.batch_size", "0", "data.init_args.batch_size must be a positive integer, got 0"),
        ("--images.num_images", "0", "images.num_images must be a positive integer, got 0"),
    ],
)
def test_bad_numbers_fail_in_one_line_leaving_no_run(mnist_root: Path, tmp_path: Path, option, value, message):
    import wandb

    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as raised:
        main(quick_args(mnist_root, runs, option, value))  # the default logger: W&B (offline in tests)
    assert str(raised.value.code) == f"gon-lightning: error: {message}"
    assert not runs.exists() or not any(runs.iterdir()), "a run folder was left behind"
    assert wandb.run is None and not list(tmp_path.rglob("wandb"))


def test_misspelt_option_is_named_with_the_options_accepted(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit) as raised:
        main(["fit", "--model=GON", "--model.init_args.nzz", "3"])
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("gon-lightning: error: --model.init_args.nzz: GON has no option 'nzz'; its options: ngf,")
    assert " nz," in err and "Union" not in err and len(err.splitlines()) <= 2


def test_wrong_type_names_the_option_by_its_full_path(capsys: pytest.CaptureFixture):
    with pytest.raises(SystemExit):
        main(["fit", "--model=GON", "--model.init_args.nz", "abc"])
    err = capsys.readouterr().err
    assert err.startswith("gon-lightning: error: --model.init_args.nz: expected int") and "abc" in err
    assert len(err.splitlines()) <= 2
