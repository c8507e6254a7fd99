"""When an epoch-end callback that costs time (image panels, sample quality) runs: every N epochs, or by default
within a share of the training time."""

from __future__ import annotations

import time

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from gon_lightning.errors import require


class TimeShareSchedule(Callback):
    """Base of callbacks that do something after training epochs (`on_train_epoch_end` asks `_due`, times the work
    with `_spent`).

    `every_n_epochs` N runs after every N-th epoch (0: never). None (the default) keeps within a time budget: after
    the first epoch and the last one, and in between whenever the time spent so far plus the last run's stays
    within `max_time_share` of the training time so far. `option` names the callback's options in errors.
    """

    def __init__(self, every_n_epochs: int | None, max_time_share: float, option: str) -> None:
        ok = every_n_epochs is None or every_n_epochs >= 0
        require(ok, f"{option}every_n_epochs", every_n_epochs, ">= 0 or null")
        require(0 < max_time_share <= 1, f"{option}max_time_share", max_time_share, "in (0, 1]")
        self.every_n_epochs = every_n_epochs
        self.max_time_share = max_time_share
        self._train_start = 0.0
        self._drawing_s = 0.0  # time spent in this fit
        self._last_draw_s = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train_start, self._drawing_s, self._last_draw_s = time.perf_counter(), 0.0, 0.0

    def _due(self, trainer: pl.Trainer, epoch: int) -> bool:
        """Whether to run after `epoch` (counted from 1)."""
        if self.every_n_epochs is not None:
            return bool(self.every_n_epochs) and epoch % self.every_n_epochs == 0
        last = (
            trainer.should_stop
            or (trainer.max_epochs is not None and trainer.max_epochs > 0 and epoch >= trainer.max_epochs)
            or (trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps)
        )
        training_s = time.perf_counter() - self._train_start - self._drawing_s
        return last or not self._drawing_s or self._drawing_s + self._last_draw_s <= self.max_time_share * training_s

    def _spent(self, seconds: float) -> None:
        self._last_draw_s = seconds
        self._drawing_s += seconds
