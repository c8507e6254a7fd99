"""One test per private API of Lightning, jsonargparse and torch we rely on (docs/design.md, "Private APIs we
rely on"): each fails when an upgrade removes or changes what we use, before a user meets it."""

from __future__ import annotations

import inspect

import pytest
import pytorch_lightning as pl
import torch
from jsonargparse import ArgumentParser
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn
from torch.utils.data import DataLoader

from gon_lightning.models import GON
from gon_lightning.parser import short_error


def test_jsonargparse_skip_validation_parses_a_partial_config():
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_argument("--required", type=int, required=True)
    parser.add_argument("--given", type=int, default=1)
    with pytest.raises(Exception):  # noqa: B017 (jsonargparse's error type is what may change)
        parser.parse_args(["--given", "2"], defaults=False)
    assert parser.parse_args(["--given", "2"], defaults=False, _skip_validation=True).given == 2
    assert parser.parse_object({"given": 3}, defaults=False, _skip_validation=True).given == 3


def test_lightning_cli_reads_checkpoint_hyperparameters_between_parsing_and_instantiation():
    source = inspect.getsource(LightningCLI.__init__)
    order = [source.index(call) for call in ("self.parse_arguments(", "self._parse_ckpt_path()", "before_instantiate")]
    assert order == sorted(order)


def test_argparse_actions_list_a_classes_options():
    parser = ArgumentParser()
    parser.add_class_arguments(GON, "x")
    assert {"x.nz", "x.ngf", "x.lr"} <= {action.dest for action in parser._actions}


def test_jsonargparse_error_texts_we_shorten(capsys: pytest.CaptureFixture):
    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(pl.LightningModule, "model", required=False)
    with pytest.raises(Exception) as raised:
        parser.parse_args(["--model=gon_lightning.models.GON", "--model.init_args.nzz=3"])
    assert short_error(str(raised.value)).startswith("--model.init_args.nzz: GON has no option 'nzz'")


class _StopAtFirstBatch(Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        trainer._signal_connector.received_sigterm = True


def test_signal_connector_flag_stops_training_like_sigterm():
    trainer = pl.Trainer(
        max_steps=5, callbacks=[_StopAtFirstBatch()], logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    with pytest.raises(SIGTERMException):
        trainer.fit(GON(nz=4, ngf=2, norm="none"), DataLoader(torch.rand(8, 1, 32, 32), batch_size=4))
    assert trainer.global_step == 1


def test_strategy_layer_sync_tells_sync_batchnorm_was_asked_for():
    def strategy(sync: bool) -> object:
        trainer = pl.Trainer(strategy="ddp", accelerator="cpu", devices=2, sync_batchnorm=sync, logger=False)
        return trainer.strategy

    assert strategy(True)._layer_sync is not None and strategy(False)._layer_sync is None
    # one process: no _layer_sync at all, which OriginModel.setup reads as "not asked for"
    assert getattr(pl.Trainer(logger=False).strategy, "_layer_sync", None) is None


def test_model_checkpoint_internals_we_call():
    expected = {
        "_should_skip_saving_checkpoint": ["trainer"],
        "_save_last_checkpoint": ["trainer", "monitor_candidates"],
        "_monitor_candidates": ["trainer"],
        "_should_save_on_train_epoch_end": ["trainer"],
    }
    for name, parameters in expected.items():
        assert list(inspect.signature(getattr(ModelCheckpoint, name)).parameters)[1:] == parameters, name


def test_lightning_module_trainer_attribute_is_none_without_a_trainer():
    model = GON(nz=4, ngf=2)
    assert model._trainer is None
    with pytest.raises(RuntimeError):
        model.trainer  # noqa: B018 (the public property raises: why we read _trainer)


def test_batchnorm_base_class_covers_every_batchnorm():
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm):
        assert issubclass(cls, nn.modules.batchnorm._BatchNorm)


def test_wandb_logger_passes_anonymous_none_to_wandb_init(tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    logger = WandbLogger(save_dir=str(tmp_path), offline=True)  # no experiment is created yet
    assert "anonymous" in logger._wandb_init and logger._wandb_init["anonymous"] is None


def test_log_hyperparams_flag_keeps_lightnings_flat_hparams_out_of_the_loggers(tmp_path):
    from pytorch_lightning.demos.boring_classes import BoringModel
    from pytorch_lightning.loggers import CSVLogger

    class Recorder(CSVLogger):
        logged: list = []

        def log_hyperparams(self, params, *args, **kwargs):
            self.logged.append(dict(params))

    class Model(BoringModel):
        def __init__(self, width: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters()

    for flag in (True, False):
        model, logger = Model(), Recorder(tmp_path)
        model._log_hyperparams = flag
        Recorder.logged = []
        trainer = pl.Trainer(
            max_steps=1, logger=logger, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0,
        )  # fmt: skip
        trainer.fit(model)
        assert (Recorder.logged == [{"width": 3}]) is flag


def test_logger_connector_says_whether_this_step_reaches_the_loggers():
    from pytorch_lightning.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    assert isinstance(inspect.getattr_static(_LoggerConnector, "should_update_logs"), property)
    assert "should_update_logs" in inspect.getsource(_LoggerConnector.update_train_step_metrics)


def test_model_checkpoint_records_the_last_save():
    source = inspect.getsource(ModelCheckpoint._save_checkpoint)
    assert "self._last_global_step_saved = trainer.global_step" in source
    assert "self._last_checkpoint_saved = filepath" in source


def test_wandb_applies_launch_inputs_from_the_staging_module():
    from wandb.sdk import wandb_run

    source = inspect.getsource(inspect.unwrap(wandb_run.Run._detect_and_apply_job_inputs))  # ours wraps it
    assert "wandb.sdk.launch.inputs.internal" in source
    assert "self._detect_and_apply_job_inputs()" in inspect.getsource(wandb_run.Run._on_ready)


def test_wandb_asks_util_whether_a_logged_value_is_a_data_frame():
    from wandb import util
    from wandb.sdk.data_types import utils

    assert "util.is_pandas_data_frame(val)" in inspect.getsource(utils.val_to_json)  # looked up at each call
    assert "import pandas" in inspect.getsource(inspect.unwrap(util.is_pandas_data_frame))  # ours wraps it


def test_torch_nvml_cuda_check_loads_libnvidia_ml_and_falls_back_to_the_runtime():
    import lightning_fabric

    assert 'os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "1"' in inspect.getsource(lightning_fabric)
    assert 'CDLL("libnvidia-ml.so.1")' in inspect.getsource(torch.cuda._raw_device_count_nvml)
    assert "except OSError" in inspect.getsource(torch.cuda._device_count_nvml)
    fallback = "torch._C._cuda_getDeviceCount() if nvml_count < 0 else nvml_count"
    assert fallback in inspect.getsource(torch.cuda.device_count)


def test_wandb_lists_installed_packages_at_start_unless_x_save_requirements_is_off():
    import wandb
    from wandb.sdk import wandb_run

    assert wandb.Settings(x_save_requirements=False).x_save_requirements is False
    source = inspect.getsource(wandb_run.Run._on_start)
    assert "if self._settings.x_save_requirements" in source and "working_set()" in source


def test_litdata_loader_restores_until_its_epoch_iterator_is_exhausted():
    """streaming._loader_class ends the restore itself: litdata clears it only after the last batch."""
    litdata = pytest.importorskip("litdata")
    source = inspect.getsource(litdata.StreamingDataLoader.__iter__)
    assert "elif not self.restore:" in source and source.rstrip().count("self.restore = False") >= 1
    assert "self.restore = True" in inspect.getsource(litdata.StreamingDataLoader.load_state_dict)


def test_lightning_ends_the_epoch_at_max_steps_and_counts_its_last_batch():
    """BestAndLastCheckpoint writes last.ckpt mid-epoch where max_steps ends the epoch before its last batch."""
    from pytorch_lightning.loops.training_epoch_loop import _TrainingEpochLoop

    assert "self.max_steps" in inspect.getsource(_TrainingEpochLoop._is_training_done.fget)
    assert "is_last_batch" in inspect.getsource(_TrainingEpochLoop.advance)


def test_lightning_cli_instantiates_the_trainer_with_its_own_callbacks_apart():
    source = inspect.getsource(LightningCLI.instantiate_trainer)
    assert "callback_keys" in source and "self._instantiate_trainer(trainer_config, extra_callbacks)" in source
    assert list(inspect.signature(LightningCLI._instantiate_trainer).parameters) == ["self", "config", "callbacks"]
