"""Files a run writes about itself: the config it was started with, and the metrics of each `test`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import yaml
from jsonargparse import Namespace
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.cli import SaveConfigCallback
from pytorch_lightning.utilities import rank_zero_only


class RunConfigCallback(SaveConfigCallback):
    """Saves the config as the user gave it (no run-specific paths, no ckpt_path) into the run folder, and the
    resolved config (with the run's folder and W&B id) into every logger's hyperparameters (W&B run config)."""

    def __init__(self, *args: Any, user_config: Namespace, run_dir: str, filename: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user_config = user_config
        self.run_dir = run_dir
        self.filename = filename

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            Path(self.run_dir).mkdir(parents=True, exist_ok=True)
            path = os.path.join(self.run_dir, self.filename)
            self.parser.save(self.user_config, path, skip_none=False, overwrite=True, multifile=False)
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
            for logger in trainer.loggers:
                logger.log_hyperparams({"config": resolved, "run_dir": self.run_dir})
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)


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
