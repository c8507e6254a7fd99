"""A DataModule of random images of any size, decoded straight into the mapped cache, for the memory and
larger-than-RAM benchmarks (`memory.py`, `larger_than_ram.py`). `gon-lightning fit --data=synthetic.SyntheticImages`
finds it with `benchmarks/` on PYTHONPATH.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from gon_lightning.data.base import ImageDataModule, Split
from gon_lightning.data.cache import CacheWriter
from gon_lightning.models.base import ImageModel

CHUNK = 8192  # images written at a time: the writer never holds more than this in memory


class SyntheticImages(ImageDataModule):
    """`size_mb` MB of uniformly random uint8 colour training images (and a test split of `test_images`).

    Args:
        size_mb: size of the decoded training split, in MB (10^6 bytes).
        test_images: images in the test split (the validation split by default).
        private_copy: copy every split into this process's own memory after mapping it: the layout before the
            mapped cache, kept as the benchmark's control (its memory must come out as N copies).
    """

    folder = "synthetic"
    channels = 3

    def __init__(self, *args, size_mb: int = 1000, test_images: int = 1024, private_copy: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.size_mb = size_mb
        self.test_images = test_images
        self.private_copy = private_copy

    @property
    def image_bytes(self) -> int:
        return self.channels * self.image_size**2

    def cache_fingerprint(self) -> dict:
        return {"size_mb": self.size_mb, "test_images": self.test_images}

    def decode(self) -> dict[str, Split]:
        raise NotImplementedError("written straight into the cache by write_cache")

    def write_cache(self, writer: CacheWriter) -> None:
        rng = np.random.default_rng(0)
        counts = {"train": self.size_mb * 10**6 // self.image_bytes, "test": self.test_images}
        for name, count in counts.items():
            images, labels = writer.open_split(name, count)
            for start in range(0, count, CHUNK):
                stop = min(start + CHUNK, count)
                images[start:stop] = rng.integers(0, 256, size=(stop - start, *self.dims), dtype=np.uint8)
            labels[:] = np.arange(count) % 10
            writer.close_split(name)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if self.private_copy:
            for dataset in self.datasets.values():
                dataset.images = dataset.images.clone()


class TouchEveryImage(ImageModel):
    """A model whose training step only reads its batch (one parameter: the loss is the batch mean's distance
    from it), so a fit costs what serving the data costs: the memory benchmark's fit over a whole epoch."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.level = nn.Parameter(torch.zeros(()))

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        return (x.mean() - self.level).square()
