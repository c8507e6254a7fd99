"""A command that fails before it leaves a result leaves nothing behind: no run folder, no W&B run (issue 24)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from cli_args import base_args, only_run

from gon_lightning.cli import main
from gon_lightning.data import ImageDataModule
from gon_lightning.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def listing(root: Path) -> list[str] | None:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None


@pytest.fixture
def wandb_inits(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every W&B run started (offline here; online it would be a run on the user's dashboard)."""
    import wandb

    calls: list[dict] = []
    init = wandb.init

    @functools.wraps(init)  # the CLI reads WandbLogger's options from wandb.init's signature
    def recorded_init(*args, **kwargs):
        calls.append(kwargs)
        return init(*args, **kwargs)

    monkeypatch.setattr(wandb, "init", recorded_init)
    return calls


def fails_setting_up(self, stage=None):
    raise UserError("data.init_args.root: broken images (simulated)")


@pytest.mark.parametrize("runs_exist", [False, True], ids=["fresh", "beside-a-run"])
@pytest.mark.parametrize("when", ["prepare-missing", "prepare-corrupt", "setup", "first-dataloader"])
def test_a_data_error_leaves_runs_as_it_was(
    mnist_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    wandb_inits: list[dict],
    capsys: pytest.CaptureFixture,
    when,
    runs_exist,
):
    runs = tmp_path / "runs"
    if runs_exist:  # an earlier run stays exactly as it is
        (runs / "gon-mnist-20260101-000000" / "checkpoints").mkdir(parents=True)
        (runs / "gon-mnist-20260101-000000" / "checkpoints" / "last.ckpt").write_bytes(b"x")
    before = listing(runs)
    extra: list[str] = []
    if when == "prepare-missing":  # found when the data is prepared (download off)
        (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").unlink()
    elif when == "prepare-corrupt":  # a truncated file, found while it is decoded (any error, not only ours)
        (mnist_root / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\0\0\x08\x03 truncated")
    elif when == "setup":
        monkeypatch.setattr(ImageDataModule, "setup", fails_setting_up)
    else:  # too few images for one batch: found when the training DataLoader is built
        extra = ["--data.init_args.batch_size=100000"]
    with pytest.raises((SystemExit, ValueError)) as raised:
        main(base_args(mnist_root, runs, *extra, logger=None))  # the default loggers: W&B (offline) and CSV
    if when != "prepare-corrupt":
        assert str(raised.value.code).startswith("gon-lightning: error:")
    assert listing(runs) == before
    assert wandb_inits == []  # no W&B run was started, offline or (for a logged-in user) online
    assert "W&B offline" not in capsys.readouterr().err  # nor said to log into a folder that is gone


def test_an_error_after_the_first_checkpoint_keeps_the_run(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    from gon_lightning.models import ImageModel

    def fails_in_epoch_1(self) -> None:
        if self.current_epoch == 1:
            raise UserError("simulated failure in epoch 1")

    monkeypatch.setattr(ImageModel, "on_train_epoch_start", fails_in_epoch_1)
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit, match="simulated failure"):
        main(base_args(mnist_root, runs, "--trainer.max_epochs=2", logger=None))
    run = only_run(runs)
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert list((run / "wandb").glob("offline-run-*"))
    assert f"W&B offline: logging to {run}/wandb" in capsys.readouterr().err  # said when the run started


def test_a_failed_resume_never_removes_its_run(mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs))
    run = only_run(runs)
    before = listing(runs)
    monkeypatch.setattr(ImageDataModule, "setup", fails_setting_up)
    last = run / "checkpoints" / "last.ckpt"
    for subcommand in ("fit", "test"):
        args = [subcommand, f"--config={run / 'config.yaml'}", f"--ckpt_path={last}", "--trainer.max_epochs=2"]
        with pytest.raises(SystemExit, match="broken images"):
            main(args if subcommand == "fit" else args[:-1])
        assert listing(runs) == before


def test_an_evaluation_that_fails_before_its_result_leaves_no_folder(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, wandb_inits: list[dict]
):
    """test without a checkpoint makes a folder of its own: it goes when the command fails before its metrics."""
    monkeypatch.setattr(ImageDataModule, "setup", fails_setting_up)
    with pytest.raises(SystemExit, match="broken images"):
        main(base_args(mnist_root, tmp_path / "runs", subcommand="test", logger=None))
    assert not (tmp_path / "runs").exists() and wandb_inits == []
