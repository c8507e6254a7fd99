"""Callbacks for the training-order tests (tests/test_order.py), named by class path on `gon-lightning fit`
command lines (in-process and in the DDP subprocesses), so they are configured through the environment.

- `RecordOrder` appends one line per training batch to `$ORDER_OUT/rank<global rank>.txt`: the epoch and a hash
  of each image of the batch, so a test can count which images every rank saw in every epoch, and compare the
  order of an interrupted and resumed run with the straight one.
- `StopAt` asks the Trainer to stop, as SIGTERM does, after the training step that brings the global step to
  `$STOP_AT_STEP` (the CLI then writes last.ckpt in the middle of the epoch).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytorch_lightning as pl
import torch


def image_hashes(batch: torch.Tensor) -> list[str]:
    pixels = (batch.detach().cpu() * 255).round().to(torch.uint8)
    return [hashlib.sha1(image.numpy().tobytes()).hexdigest()[:12] for image in pixels]


class RecordOrder(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        out = Path(os.environ["ORDER_OUT"]) / f"rank{trainer.global_rank}.txt"
        with out.open("a") as f:
            f.write(f"{trainer.current_epoch} {' '.join(image_hashes(batch))}\n")


class StopAt(pl.Callback):
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if os.environ.get("STOP_AT_STEP") and trainer.global_step == int(os.environ["STOP_AT_STEP"]):
            trainer._signal_connector.received_sigterm = True  # what Lightning's SIGTERM handler sets
