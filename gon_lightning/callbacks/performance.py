"""Speed options that are not a win everywhere, so they are opt-in (docs/performance.md has the measurements)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class ChannelsLast(Callback):
    """Keep the model's 4-D weights, and so its convolution activations, in the channels_last memory layout.

    Not always a win, so opt-in: on a loaded shared 2-core CPU one micro-benchmark of the GON step (nz 256, ngf 16,
    batch 64) ran 1.5-5x faster with it, but benchmarks/throughput.py did not separate it from the noise; on GPUs
    it mostly pays with fp16/bf16 tensor cores. Measure before keeping it (docs/performance.md).
    Enable with `--trainer.callbacks+=ChannelsLast`
    or in a config's trainer.callbacks.
    Applied in `setup`, before the strategy wraps the model (DDP) or the optimiser is built.
    """

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.to(memory_format=torch.channels_last)
