"""Speed options that are not a win everywhere, so they are opt-in (docs/performance.md has the measurements)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class ChannelsLast(Callback):
    """Keep the model's 4-D weights, and so its convolution activations, in the channels_last memory layout.

    On CPU (oneDNN) this made the GON training step (nz 256, ngf 16, batch 64) several times faster with BatchNorm
    and about 1.5x without, in our measurements; on GPUs it mostly pays with fp16/bf16 tensor cores: measure
    before keeping it there. Enable with `--trainer.callbacks+=ChannelsLast` or in a config's trainer.callbacks.
    Applied in `setup`, before the strategy wraps the model (DDP) or the optimiser is built.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
