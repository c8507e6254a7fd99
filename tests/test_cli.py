"""Every config through the real CLI entry point, on fake data in each dataset's real format."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from image_fixtures import config_image_size

from gon_lightning.cli import GONLightningCLI, invoked_subcommand, main
from gon_lightning.parser import GONArgumentParser
from gon_lightning.trainer import GONTrainer

CONFIGS = Path(__file__).parents[1] / "configs"
DATA_FIXTURES = {
    "MNISTDataModule": "mnist_root",
    "FashionMNISTDataModule": "fashion_root",
    "CIFAR10DataModule": "cifar_root",
    "COIL20DataModule": "coil20_root",
    "MNIST5kDataModule": "tmp_path",
    "CelebADataModule": "celeba_root",
    "ImageFolderDataModule": "image_folder_root",
}


def data_root(config: Path, request: pytest.FixtureRequest) -> Path:
    data_class = yaml.safe_load(config.read_text())["data"]["class_path"].rsplit(".", 1)[-1]
    return request.getfixturevalue(DATA_FIXTURES[data_class])


# sweeps: test_usability. functa's: its 15 x 512 SIREN with 3 second-order inner steps at 64 px took over 10 GB and
# many minutes for one step of 8 images here, so the functa configs run shrunk, fit and validation, in
# test_inner_loop.py (test_functa_configs_run_a_step); their full size is a GPU's check. The priors' (prior*.yaml)
# train on a model checkpoint's latents: test_prior_runs.py runs them on a trained GON
SKIPPED_HERE = ("functa_", "prior")
RUN_CONFIGS = sorted(
    p for p in CONFIGS.rglob("*.yaml") if "sweeps" not in p.parts and not p.stem.startswith(SKIPPED_HERE)
)


@pytest.mark.parametrize(
    "config",
    RUN_CONFIGS,
    ids=lambda p: str(p.relative_to(CONFIGS)),
)
def test_every_config_fits_and_tests(config: Path, request: pytest.FixtureRequest):
    size = config_image_size(config)
    root = str(data_root(config, request))
    # one batch of 8 at 64 px and up, and for the implicit GON (its SIREN's second-order step runs per pixel: 64
    # images took 12 s a config here): the step is what is checked, and 64 images of 64 px cost 4x a 32-px batch
    implicit = yaml.safe_load(config.read_text())["model"]["class_path"].endswith("ImplicitGON")
    smaller = ["--data.batch_size", "8"] if size > 32 or implicit else []
    for subcommand in ("fit", "test"):
        # no logger: this checks that every config builds and steps; loggers and panels have their own tests
        main(
            [
                subcommand,
                "--config",
                str(config),
                "--data.root",
                root,
                "--trainer.fast_dev_run",
                "true",
                "--trainer.logger",
                "false",
                *smaller,
            ]
        )


def test_data_shape_is_linked_into_the_model(cifar_root):
    cli = main(["--config", str(CONFIGS / "gon_cifar.yaml"), "--data.root", str(cifar_root)], run=False)
    assert cli.model.image_shape == (3, 32, 32)
    assert cli.model.decoder.net[-2].out_channels == 3


def test_quickstart_leaves_a_checkpoint_and_metrics(tmp_path):
    cli = main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--data.root",
            str(tmp_path / "data"),
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "4",
            "--trainer.limit_val_batches",
            "2",
        ]
    )
    assert "val/sse" in cli.trainer.callback_metrics
    assert list(Path("runs").rglob("last.ckpt")), "no last.ckpt under runs/"


def test_missing_dataset_exits_with_a_clear_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "gon_mnist.yaml"),
                "--data.root",
                str(tmp_path),
                "--data.download",
                "false",
            ]
        )
    assert exit_info.value.code not in (0, None)
    assert "MNIST is not in" in str(exit_info.value.code) and "train-images-idx3-ubyte" in str(exit_info.value.code)


def test_wrong_image_size_names_the_option(mnist_root):
    with pytest.raises(SystemExit, match=r"data\.image_size to one of 32, 64, 128, 256"):
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "gon_mnist.yaml"),
                "--data.root",
                str(mnist_root),
                "--data.image_size",
                "28",
            ]
        )


def test_unknown_option_is_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.init_args.nonsense", "1"])
    assert exit_info.value.code != 0
    assert "nonsense" in capsys.readouterr().err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "gon_lightning", "fit", "--help"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "--data.root" not in result.stderr
    assert "--model" in result.stdout and "--checkpoint.monitor" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["fit", "--config", "x.yaml"], "fit"),
        (["--config", "fit", "test"], "test"),  # the top-level --config's value is not the subcommand
        (["-c=x.yaml", "--print_config", "predict"], "predict"),
        (["--help"], None),
        ([], None),
        ({"subcommand": "validate"}, "validate"),
    ],
)
def test_invoked_subcommand_is_read_from_the_command_line(args, expected):
    assert invoked_subcommand(args) == expected


def test_only_the_invoked_subcommands_parser_is_built(monkeypatch, capsys: pytest.CaptureFixture):
    built = []
    original = GONLightningCLI.add_arguments_to_parser  # called once for each subcommand parser built

    def counting(self, parser):
        built.append(parser)
        original(self, parser)

    monkeypatch.setattr(GONLightningCLI, "add_arguments_to_parser", counting)
    for subcommand, option in (("fit", "--checkpoint.monitor"), ("test", "--ckpt_path")):
        built.clear()
        with pytest.raises(SystemExit) as done:
            main([subcommand, "--help"])
        assert done.value.code == 0 and len(built) == 1
        assert option in capsys.readouterr().out
    built.clear()
    with pytest.raises(SystemExit):
        main(["--help"])  # no subcommand named: every one is listed
    assert len(built) == 4 + len(GONTrainer.SUBCOMMANDS)  # Lightning's four and gon-lightning's own
    listed = capsys.readouterr().out.split("Available subcommands:", 1)[1]
    assert all(name in listed for name in ("fit", "validate", "test", "predict", *GONTrainer.SUBCOMMANDS))
    with pytest.raises(SystemExit) as failed:
        main(["fitt"])
    assert failed.value.code == 2 and "invalid choice: 'fitt'" in capsys.readouterr().err
    built.clear()
    monkeypatch.setattr(sys, "argv", ["gon-lightning", "validate", "--help"])
    with pytest.raises(SystemExit):
        GONLightningCLI(parser_class=GONArgumentParser)  # no args: LightningCLI parses sys.argv, and so do we
    assert len(built) == 1 and "--ckpt_path" in capsys.readouterr().out
