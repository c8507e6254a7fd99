"""The real images of sample quality: a DataModule's decoded splits, which the classifier extractors train on and
whose features the reference cache holds."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from gon_lightning.errors import DATA, UserError


def split_images(datamodule: Any, split: str) -> tuple[Tensor, Tensor]:
    """A split's uint8 images (N, C, H, W) and labels, from the DataModule's decoded cache (set up if needed)."""
    if getattr(datamodule, "stream", None) is not None:
        raise UserError(
            f"sample quality reads the decoded images, not a stream: leave {DATA}stream unset for this command"
        )
    if not datamodule.datasets:
        datamodule.setup("fit")
    if split not in datamodule.datasets:
        raise UserError(f"{type(datamodule).__name__} has no {split} split")
    return datamodule.splits[split], datamodule.labels[split]
