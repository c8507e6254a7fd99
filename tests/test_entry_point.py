"""The command's entry point tells configuration errors in one line, and the Trainer options users reach for work:
checkpointing off, the loggers beside W&B, the command's own --help (issue 32)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_args import base_args, only_run
from lightning_fabric.utilities.exceptions import MisconfigurationException

from gon_lightning.cli import main
from gon_lightning.errors import DEBUG_ENV, configuration_error

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def one_line_exit(args: list[str], capsys: pytest.CaptureFixture) -> str:
    """Run the command, which must exit non-zero with one line and no traceback; return that line."""
    with pytest.raises(SystemExit) as exited:
        main(args)
    line = str(exited.value.code)
    assert line.startswith("gon-lightning: error: ") and "\n" not in line, line
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return line


def test_checkpointing_off_trains_and_says_there_is_nothing_to_resume(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs, "--trainer.enable_checkpointing=false"))
    run = only_run(runs)
    assert not list(run.rglob("*.ckpt")) and not (run / "checkpoints").exists()
    assert (run / "config.yaml").is_file()
    assert (run / "logs" / "version_0" / "metrics.csv").is_file()
    assert list((run / "images").glob("samples-epoch0000.png"))
    captured = capsys.readouterr()
    assert "checkpointing is off" in captured.err  # said once, when the run starts
    assert "nothing to test or resume" in captured.out and "train on:" not in captured.out


no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")


@no_gpu
def test_a_gpu_asked_for_where_there_is_none_is_one_line(mnist_root: Path, tmp_path: Path):
    args = base_args(mnist_root, tmp_path / "runs", "--trainer.accelerator=gpu")
    result = subprocess.run(  # the console's own entry point, as a user runs it
        [sys.executable, "-m", "gon_lightning", *args], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("gon-lightning: error:")]
    assert "--trainer.accelerator" in line and "--trainer.accelerator cpu" in line
    assert not (tmp_path / "runs").exists()  # a refused command leaves nothing behind


def test_any_other_refusal_of_lightnings_is_one_line_too(mnist_root: Path, tmp_path: Path, capsys):
    line = one_line_exit(base_args(mnist_root, tmp_path / "runs", "--trainer.max_epochs=-5"), capsys)
    assert "max_epochs" in line


def test_a_loggers_missing_package_names_the_extra(mnist_root: Path, tmp_path: Path, capsys, monkeypatch):
    import lightning_fabric.loggers.tensorboard as fabric_tensorboard

    monkeypatch.setattr(fabric_tensorboard, "_TENSORBOARD_AVAILABLE", False)  # as without the extra
    monkeypatch.setattr(fabric_tensorboard, "_TENSORBOARDX_AVAILABLE", False)
    line = one_line_exit(base_args(mnist_root, tmp_path / "runs", logger="TensorBoardLogger"), capsys)
    assert "--trainer.logger TensorBoardLogger" in line and "pip install 'gon-lightning[tensorboard]'" in line


def test_mlflow_without_its_extra_is_one_line(mnist_root: Path, tmp_path: Path, capsys):
    pytest.importorskip("pytorch_lightning.loggers.mlflow")
    from pytorch_lightning.loggers.mlflow import _MLFLOW_AVAILABLE

    if _MLFLOW_AVAILABLE:
        pytest.skip("mlflow is installed")
    line = one_line_exit(base_args(mnist_root, tmp_path / "runs", logger="MLFlowLogger"), capsys)
    assert "--trainer.logger MLFlowLogger" in line and "gon-lightning[mlflow]" in line


def test_mlflow_logs_into_a_store_in_the_run_folder_that_mlflow_reads(mnist_root: Path, tmp_path: Path, monkeypatch):
    """With the `mlflow` extra (mlflow-skinny 3, whose default file store refuses to start): the metrics go to a
    SQLite store in the run folder, read back through MLflow's own client."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory (Lightning's default ./mlruns)
    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs, "--trainer.log_every_n_steps=1", logger="MLFlowLogger"))
    run_dir = only_run(runs)
    assert (run_dir / "mlflow.db").is_file() and not (tmp_path / "mlruns").exists()
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "lightning_logs"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name and run.info.status == "FINISHED"
    assert {"val/sse", "train/loss_epoch", "train/loss"} <= set(run.data.metrics), run.data.metrics
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 2  # both steps
    assert run.data.params["run_dir"] == str(run_dir)


def test_a_logger_that_cannot_start_is_one_line(mnist_root: Path, tmp_path: Path, capsys, monkeypatch):
    from pytorch_lightning.loggers import CSVLogger

    def refuse(self):
        raise RuntimeError("The filesystem tracking backend is in maintenance mode.\nSet a store.")

    monkeypatch.setattr(CSVLogger, "experiment", property(refuse))
    runs = tmp_path / "runs"
    line = one_line_exit(base_args(mnist_root, runs), capsys)
    assert line == (
        "gon-lightning: error: --trainer.logger CSVLogger could not start: The filesystem tracking backend is in "
        "maintenance mode. Set a store."
    )
    assert not runs.exists() or not any(runs.iterdir())  # no run folder left behind


def test_panels_and_metrics_reach_tensorboards_event_files(mnist_root: Path, tmp_path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = tmp_path / "runs"
    main(base_args(mnist_root, runs, logger="TensorBoardLogger"))
    (events,) = only_run(runs).rglob("events.out.tfevents.*")
    read = EventAccumulator(str(events.parent), size_guidance={"images": 0, "scalars": 0})
    read.Reload()
    tags = read.Tags()
    assert {"val/sse", "train/loss_epoch"} <= set(tags["scalars"])
    assert {"images/reconstructions", "images/samples"} <= set(tags["images"]), tags["images"]
    (png,) = read.Images("images/samples")
    assert png.encoded_image_string.startswith(b"\x89PNG") and png.width > 0


@no_gpu
def test_a_bug_keeps_its_traceback_and_the_debug_switch_shows_every_one(
    mnist_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    assert configuration_error(RuntimeError("a bug")) is None
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(MisconfigurationException, match="gpu backend"):
        main(base_args(mnist_root, tmp_path / "runs", "--trainer.accelerator=gpu"))


def test_help_says_what_gon_lightning_is_and_lists_its_subcommands():
    result = subprocess.run(
        [sys.executable, "-m", "gon_lightning", "--help"], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.startswith("usage: gon-lightning")
    assert "Gradient Origin Networks" in result.stdout and "Lightning Trainer command line tool" not in result.stdout
    for subcommand in ("fit", "validate", "test", "predict", "evaluate", "export", "encode"):
        assert f"\n    {subcommand} " in result.stdout
