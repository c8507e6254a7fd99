"""What a run records about itself: the config it was started with, its W&B summary, the metrics of each `test`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.loggers import Logger, WandbLogger
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from gon_lightning.errors import UserError


class LoopStart(Callback):
    """Calls `at_loop_start(trainer)` when the command's loop starts: training, or the evaluation (not fit's sanity
    check), after the data was prepared, set up and loaded."""

    def at_loop_start(self, trainer: pl.Trainer) -> None:
        raise NotImplementedError

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_loop_start(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # not fit's sanity check: the training data is not loaded yet
            self.at_loop_start(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_loop_start(trainer)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.at_loop_start(trainer)


class HoldBackLoggers(LoopStart):
    """Keeps the loggers out of the trainer until the command's loop starts, so a command that fails before (a
    dataset missing or corrupt, too few images for one batch) never opens a W&B run nor adds a CSV version:
    Lightning starts every logger's run before the data is set up. `hold(trainer)` right after the trainer is
    made; must be the first callback, so the others find the loggers in place at the loop's start."""

    def __init__(self, note: str | None = None) -> None:
        self.loggers: list[Logger] | None = None
        self.note = note  # printed (rank 0) when the loggers start: where an offline W&B run logs

    def hold(self, trainer: pl.Trainer) -> None:
        if trainer.loggers:
            self.loggers, trainer.loggers = trainer.loggers, []

    def at_loop_start(self, trainer: pl.Trainer) -> None:
        if self.loggers is not None:
            for logger in self.loggers:
                start(logger)
            trainer.loggers, self.loggers = self.loggers, None
            if self.note and trainer.is_global_zero:
                print(self.note, file=sys.stderr, flush=True)


def start(logger: Logger) -> None:
    """Start `logger`'s run (its `experiment`: a placeholder on ranks other than 0), or stop the command with one line
    saying which logger could not start and why (a store its version refuses, a server out of reach)."""
    try:
        logger.experiment  # noqa: B018 (the property starts the run)
    except Exception as error:
        if isinstance(error, UserError):
            raise
        name = type(logger).__name__
        why = " ".join(str(error).split()) or type(error).__name__
        why = why if len(why) <= 400 else why[:400] + " ..."
        raise UserError(f"--trainer.logger {name} could not start: {why}") from error


class RunConfigCallback(SaveConfigCallback, LoopStart):
    """Saves the config as the user gave it (no run-specific paths, no ckpt_path) into the run folder, and the
    resolved config (with the run's folder and W&B id) into every logger's hyperparameters (W&B run config).

    The loggers get it when the command's loop starts (see `HoldBackWandb`), not when the trainer is set up.
    """

    def __init__(self, *args: Any, user_config: Namespace, run_dir: str, filename: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_config = user_config
        self.run_dir = run_dir
        self.filename = filename

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the loggers get the config once (at_loop_start), not also Lightning's flat copy of the model's and data's
        # arguments (with LightningCLI's `_instantiator`) beside the nested one
        pl_module._log_hyperparams = False
        if trainer.datamodule is not None:
            trainer.datamodule._log_hyperparams = False

    def at_loop_start(self, trainer: pl.Trainer) -> None:
        """`config.yaml` (or `<subcommand>-config.yaml`) into the run folder, and the resolved config, without unset
        (null) values, into every logger; once, on rank 0. At the loop's start, so that a command that fails before
        leaves a resumed run's folder as it was."""
        if self.already_saved:
            return
        if trainer.is_global_zero:
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            path = os.path.join(self.run_dir, self.filename)
            # both were validated when parsed: validating each dump again took a tenth of a second per command
            self.parser.save(
                self.user_config, path, skip_unset=False, skip_validation=True, overwrite=True, multifile=False
            )
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_unset=True, skip_validation=True))
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": resolved, "run_dir": self.run_dir})
        self.already_saved = True


class WandbRunSummary(Callback):
    """What a W&B dashboard should show of a run at a glance: the best `val/sse`, `val/mse` (min) and `val/psnr`
    (max) beside the last, and the best checkpoint's path and score (`best/checkpoint`, `best/val_sse`)."""

    BEST = {"val/sse": "min", "val/mse": "min", "val/psnr": "max"}

    @staticmethod
    def _runs(trainer: pl.Trainer) -> list[Any]:
        return [logger.experiment for logger in trainer.loggers if isinstance(logger, WandbLogger)]

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # at the start of training, not of fit: the W&B run starts once the training data has loaded
        for run in self._runs(trainer):
            for name, best in self.BEST.items():
                run.define_metric(name, step_metric="trainer/global_step", summary=f"{best},last")

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        if not isinstance(checkpoint, ModelCheckpoint) or not checkpoint.best_model_path:
            return
        for run in self._runs(trainer):
            run.summary["best/checkpoint"] = checkpoint.best_model_path
            if checkpoint.best_model_score is not None:
                run.summary[f"best/{checkpoint.monitor.replace('/', '_')}"] = float(checkpoint.best_model_score)

    on_fit_end = on_train_epoch_end


class SaveTestMetrics(Callback):
    """After `test`, writes `test_metrics.json` (the checkpoint tested and every `test/...` metric) and prints
    them in one line. The file goes to `dirpath`, by default the trainer's `default_root_dir` (the run folder
    under the CLI), so `trainer.test(...)` from Python leaves the same record as `gon-lightning test`."""

    def __init__(self, dirpath: str | Path | None = None) -> None:
        self.dirpath = dirpath

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if k.startswith("test/")}
        path = Path(self.dirpath or trainer.default_root_dir) / "test_metrics.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"checkpoint": trainer.ckpt_path, "metrics": metrics}, indent=2) + "\n")
        shown = "  ".join(f"{k} {v:.5g}" for k, v in metrics.items())
        print(f"test: {shown}  -> {path}")
