"""The CLI's decisions as plain functions (gon_lightning.runs) and the test-metrics callback, each on its own."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from jsonargparse import Namespace

from gon_lightning import runs
from gon_lightning.callbacks import SaveTestMetrics
from gon_lightning.data import MNISTDataModule
from gon_lightning.errors import UserError
from gon_lightning.models import GON


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (runs.RUN_DIR_ENV, runs.WANDB_ID_ENV, "WANDB_RESUME", "LOCAL_RANK", "NODE_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)


def config(**extra) -> Namespace:
    return Namespace(
        model=Namespace(class_path="gon_lightning.models.VariationalGON"),
        data=Namespace(class_path="gon_lightning.data.CIFAR10DataModule"),
        **extra,
    )


def test_run_name_and_config_filename():
    assert runs.run_name(config()) == "variationalgon-cifar10"
    assert runs.config_filename("fit") == "config.yaml" and runs.config_filename(None) == "config.yaml"
    assert runs.config_filename("test") == "test-config.yaml"


def test_ckpt_path_last_is_the_newest_last_checkpoint_of_that_model_and_data(tmp_path: Path):
    with pytest.raises(UserError, match=r"--ckpt_path last: nothing matches .*gon-mnist-\*/checkpoints/last.ckpt"):
        runs.resolve_ckpt_path("last", tmp_path, "gon-mnist")
    for run, age in (("gon-mnist-1", 100), ("gon-mnist-2", 0), ("vae-mnist-1", -100)):
        path = tmp_path / run / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (time.time() - age, time.time() - age))
    assert runs.resolve_ckpt_path("last", tmp_path, "gon-mnist") == str(tmp_path / "gon-mnist-2/checkpoints/last.ckpt")
    with pytest.raises(UserError, match="no such checkpoint file"):
        runs.resolve_ckpt_path(str(tmp_path / "missing.ckpt"), tmp_path, "gon-mnist")
    assert runs.resolve_ckpt_path("best", tmp_path, "gon-mnist") == "best"


def test_given_model_options_evaluation_wins_others_must_agree(tmp_path: Path):
    stored = Namespace(class_path="gon_lightning.models.GON", init_args=Namespace(nz=8, norm_eval="batch"))
    runs.keep_given_model_options(None, stored, "x.ckpt")  # nothing given: the checkpoint's options stand
    runs.keep_given_model_options(Namespace(init_args=Namespace(nz=8, norm_eval="running")), stored, "x.ckpt")
    assert stored.init_args.norm_eval == "running" and stored.init_args.nz == 8
    with pytest.raises(UserError, match=r"model.init_args.nz: checkpoint 8, given 16.*norm_eval"):
        runs.keep_given_model_options(Namespace(init_args=Namespace(nz=16)), stored, "x.ckpt")
    with pytest.raises(UserError, match="model: checkpoint GON, given VAE"):
        runs.keep_given_model_options(Namespace(class_path="gon_lightning.models.VAE"), stored, "x.ckpt")


def test_resolve_run_new_resumed_and_launched_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    run_dir, wandb_id = runs.resolve_run(tmp_path / "runs", "gon-mnist", None, None)
    assert run_dir.is_dir() and run_dir.name.startswith("gon-mnist-") and wandb_id
    assert os.environ[runs.RUN_DIR_ENV] == str(run_dir) and os.environ[runs.WANDB_ID_ENV] == wandb_id
    # a checkpoint in <run>/checkpoints continues that run and its W&B id
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    info = {runs.CHECKPOINT_KEY: {"wandb_id": "abcd1234", "run_dir": "/nowhere"}}
    assert runs.resolve_run(tmp_path / "runs", "gon-mnist", str(ckpt), info) == (run_dir, "abcd1234")
    # a checkpoint moved elsewhere continues the run it records, if that folder is there
    info = {runs.CHECKPOINT_KEY: {"wandb_id": "abcd1234", "run_dir": str(run_dir)}}
    assert runs.resolve_run(tmp_path / "runs", "gon-mnist", str(tmp_path / "moved.ckpt"), info)[0] == run_dir
    # a rank started by a DDP launcher joins rank 0's run
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv(runs.RUN_DIR_ENV, str(tmp_path / "rank0"))
    monkeypatch.setenv(runs.WANDB_ID_ENV, "rank0id")
    assert runs.resolve_run(tmp_path / "runs", "gon-mnist", None, None) == (tmp_path / "rank0", "rank0id")


def test_fill_run_paths_keeps_what_the_user_set(tmp_path: Path):
    cfg = Namespace(
        trainer=Namespace(default_root_dir=None),
        checkpoint=Namespace(dirpath=None),
        images=Namespace(dirpath="/mine"),
        predictions=Namespace(output_dir=None),
        weights_only=None,
    )
    runs.fill_run_paths(cfg, tmp_path)
    assert cfg.trainer.default_root_dir == str(tmp_path) and cfg.checkpoint.dirpath == str(tmp_path / "checkpoints")
    assert cfg.images.dirpath == "/mine" and cfg.predictions.output_dir == str(tmp_path / "predictions")
    assert cfg.weights_only is True


def test_loggers_write_into_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    monkeypatch.setenv("WANDB_MODE", "offline")
    wandb = Namespace(class_path="pytorch_lightning.loggers.WandbLogger", init_args=Namespace(project="p"))
    csv = Namespace(class_path="pytorch_lightning.loggers.CSVLogger")
    note = runs.configure_loggers([wandb, csv, False], tmp_path / "run1", "id1")
    assert wandb.init_args.offline and wandb.init_args.id == "id1" and wandb.init_args.name == "run1"
    assert wandb.init_args.save_dir == str(tmp_path / "run1")
    assert f"wandb sync {tmp_path / 'run1'}/wandb/offline-run-*" in note  # printed when the run starts
    assert (csv.init_args.save_dir, csv.init_args.name) == (str(tmp_path / "run1"), "logs")
    wandb.init_args.log_model = True
    with pytest.raises(UserError, match="log_model needs an online W&B run"):
        runs.configure_loggers(wandb, tmp_path / "run1", "id1")
    monkeypatch.setenv("WANDB_MODE", "online")
    online = Namespace(class_path="pytorch_lightning.loggers.WandbLogger", init_args=Namespace())
    runs.configure_loggers(online, tmp_path / "run1", "id1")
    assert not online.init_args.get("offline")


def test_trainer_test_from_python_writes_test_metrics(mnist_root: Path, tmp_path: Path, capsys):
    trainer = pl.Trainer(
        default_root_dir=tmp_path,
        callbacks=[SaveTestMetrics()],
        limit_test_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.test(GON(nz=8, ngf=4), MNISTDataModule(root=str(mnist_root), batch_size=16, download=False))
    result = json.loads((tmp_path / "test_metrics.json").read_text())
    assert result["checkpoint"] is None and {"test/sse", "test/mse", "test/psnr"} <= result["metrics"].keys()
    assert f"-> {tmp_path / 'test_metrics.json'}" in capsys.readouterr().out


def test_an_evaluation_continuing_a_wandb_run_does_not_list_the_packages_again(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WANDB__SAVE_REQUIREMENTS", raising=False)
    recorded = {runs.CHECKPOINT_KEY: {"wandb_id": "abc123"}}
    for subcommand in ("validate", "test", "predict"):
        assert runs.wandb_settings(subcommand, recorded) == {"x_save_requirements": False}
    assert runs.wandb_settings("fit", recorded) == {}  # a resumed fit may run in another environment: listed
    assert runs.wandb_settings("test", None) == {}  # no checkpoint loaded: a new W&B run
    assert runs.wandb_settings("test", {runs.CHECKPOINT_KEY: {"wandb_id": None}}) == {}
    assert runs.wandb_settings("test", {"state_dict": {}}) == {}  # not written by gon-lightning
    monkeypatch.setenv("WANDB__SAVE_REQUIREMENTS", "true")  # the user's own setting wins
    assert runs.wandb_settings("test", recorded) == {}
