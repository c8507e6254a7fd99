"""Plain progress for logs and pipes: one line per epoch instead of a redrawn bar."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only


class EpochLog(Callback):
    """Prints `epoch 3/10 step 375 train/sse 1.23 val/sse 1.41 (12.3 s)` after each epoch, flushed."""

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(
            f"training {type(pl_module).__name__} from epoch {trainer.current_epoch}, step {trainer.global_step}",
            flush=True,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        shown = " ".join(
            f"{name} {float(metrics[name]):.4g}" for name in ("train/loss", "train/sse", "val/sse") if name in metrics
        )
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        elapsed = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        print(
            f"epoch {trainer.current_epoch + 1}/{total} step {trainer.global_step} {shown} ({elapsed:.1f} s)",
            flush=True,
        )
