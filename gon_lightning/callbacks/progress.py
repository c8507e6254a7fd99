"""Progress: one plain line per epoch for logs and pipes, and the training clock behind time-per-epoch figures."""

from __future__ import annotations

import time

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only


class EpochLog(Callback):
    """Prints `epoch 3/9 step 500 train/loss (epoch mean) 1.2 train/sse (epoch mean) 1.23 val/sse 1.41 (12.3 s)`
    after each epoch (here the 4th of 10: epochs count from 0, as Lightning's), flushed: the training values are
    the means over the epoch's images, as logged under `train/loss_epoch` and `train/sse_epoch`; `val/sse` is the
    last validation's."""

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        print(
            f"training {type(pl_module).__name__} from epoch {trainer.current_epoch}, step {trainer.global_step}",
            flush=True,
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # every process: the epoch means reduce over processes (callbacks run before the module logs them), and
        # reading the logged metrics computes them, which syncs every value logged with sync_dist=True (an
        # all_reduce each): one process alone would leave the others a collective behind
        means = pl_module.train_epoch_means() if hasattr(pl_module, "train_epoch_means") else {}
        metrics = trainer.callback_metrics
        if trainer.is_global_zero:
            self._print(trainer, means, metrics)

    def _print(self, trainer: pl.Trainer, means: dict[str, torch.Tensor], metrics: dict[str, torch.Tensor]) -> None:
        shown = [f"{name.removesuffix('_epoch')} (epoch mean) {float(value):.4g}" for name, value in means.items()]
        if not means and "train/loss" in metrics:  # a model logging its own per-step values
            shown.append(f"train/loss (last logged step) {float(metrics['train/loss']):.4g}")
        if "val/sse" in metrics:
            shown.append(f"val/sse {float(metrics['val/sse']):.4g}")
        # numbered from 0 as Lightning does everywhere (its progress bar, checkpoint names, the logged `epoch`)
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        elapsed = time.perf_counter() - getattr(self, "_start", time.perf_counter())
        print(
            f"epoch {trainer.current_epoch}/{last} step {trainer.global_step} {' '.join(shown)} ({elapsed:.1f} s)",
            flush=True,
        )


class TrainingClock(Callback):
    """Logs `time/train_s` with every validation: seconds spent training so far, validation excluded (under DDP,
    the slowest process's).

    The figure behind "wall time per epoch" in reproduction reports, and a speed curve on dashboards. It
    survives resumes (kept in the checkpoint); the clock is read only at validation boundaries, where the
    logged metrics synchronise with the device anyway.
    """

    def __init__(self) -> None:
        self.elapsed = 0.0
        self._since: float | None = None

    def _now(self, pl_module: pl.LightningModule) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # once per validation: count the queued steps too
        return time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._since = self._now(pl_module)

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._since is not None and not trainer.sanity_checking:
            self.elapsed += self._now(pl_module) - self._since
            self._since = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking:
            pl_module.log("time/train_s", self.elapsed, sync_dist=True, reduce_fx="max")  # the slowest process's

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._since = self._now(pl_module)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed": self.elapsed}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self.elapsed = state_dict["elapsed"]
