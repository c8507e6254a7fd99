"""One base for every dataset: decode once into a uint8 cache on disk, map it, serve batches from it.

Per-sample PIL decoding and resizing is an order of magnitude slower than indexing a decoded tensor for
32x32 images (docs/design.md, "The data path"), so each DataModule only says how to decode its files; this base
resizes, caches (`cache.py`: one memory-mapped file per split, shared by every process of a node), splits and
serves. Batches are whole-tensor gathers (`__getitems__`), kept on the GPU when training there; Lightning's
DistributedSampler shards the indices by rank under DDP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from gon_lightning.data.cache import CacheWriter, Split, cache_writer, read_cache
from gon_lightning.errors import DATA, UserError, positive_int, require


class InMemoryImages(Dataset):
    """A uint8 image tensor served a batch at a time."""

    def __init__(self, images: Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index]

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        # the DataLoader hands a whole batch of indices: one gather instead of B lookups and a stack
        index = torch.as_tensor(indices)
        if self.images.is_cuda:
            # copied from pageable memory, the indices would make the host wait for every kernel queued on the
            # stream (a sync per batch); staged in pinned memory and copied non_blocking, the CPU keeps running
            # ahead (the caching host allocator keeps the pinned source alive until the copy has run)
            index = index.pin_memory()
        return self.images[index.to(self.images.device, non_blocking=True)]


def keep_batch(batch: Tensor) -> Tensor:
    return batch


def fixed_split(images: Tensor, labels: Tensor, test_fraction: float = 0.2) -> dict[str, Split]:
    """A seeded split for datasets published without one; the seed is fixed so the test set never moves."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_test = round(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


class ImageDataModule(pl.LightningDataModule, ABC):
    """Base DataModule (abstract): subclasses set `folder` and `channels` and implement `decode`.

    Args:
        root: directory holding the datasets (each in its own folder, in torchvision's layout where
            torchvision has the dataset); downloads and the decoded cache go there too.
        batch_size: images per batch (per process under DDP).
        image_size: images are resized once, at decode time, to image_size x image_size.
        val_fraction: share of the training set held out for validation. 0 validates on the dataset's own
            validation split where it has one (CelebA), else on the test set, which is what the reference
            scripts report per epoch (their curves are test-set curves).
        seed: seed of the validation hold-out.
        download: fetch missing files when the network is reachable.
        device_resident: keep the decoded images on the training device (GPU), so batches need no copy.
    """

    folder: ClassVar[str]
    channels: ClassVar[int] = 1

    def __init__(
        self,
        root: str | Path = "data",
        batch_size: int = 64,
        image_size: int = 32,
        val_fraction: float = 0.0,
        seed: int = 0,
        download: bool = True,
        device_resident: bool = True,
    ) -> None:
        super().__init__()
        positive_int(DATA + "batch_size", batch_size)
        positive_int(DATA + "image_size", image_size)
        require(0.0 <= val_fraction < 1.0, DATA + "val_fraction", val_fraction, "in [0, 1)")
        self.root = Path(root).expanduser()
        if self.root.exists() and not self.root.is_dir():
            raise UserError(f"{DATA}root {self.root} is a file; it must be a directory")
        self.batch_size = batch_size
        self.image_size = image_size
        self.val_fraction = val_fraction
        self.seed = seed
        self.download = download
        self.device_resident = device_resident
        self.splits: dict[str, Tensor] = {}
        self.labels: dict[str, Tensor] = {}

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def data_dir(self) -> Path:
        return self.root / self.folder

    @property
    def cache_path(self) -> Path:
        """The folder of the decoded cache (`cache.py`)."""
        return self.data_dir / f"gon_lightning_{self.image_size}px"

    def cache_fingerprint(self) -> dict[str, Any]:
        """JSON values that, when they change, make the cache stale (a folder dataset's file list, its crop)."""
        return {}

    @abstractmethod
    def decode(self) -> dict[str, Split]:
        """Read (downloading if allowed) the dataset at its native size: {"train": ..., "test": ...}."""

    def write_cache(self, writer: CacheWriter) -> None:
        """Decode every split into `writer` at `image_size`. By default `decode` and one antialiased resize;
        datasets too large to decode into memory override this and fill `writer.open_split` arrays instead."""
        for name, (images, labels) in self.decode().items():
            if images.shape[-2:] != (self.image_size, self.image_size):
                images = resize(images, [self.image_size, self.image_size], antialias=True)
            writer.add_split(name, images.contiguous(), labels)

    def _read_cache(self) -> dict[str, Split] | None:
        return read_cache(self.cache_path, self.dims, self.cache_fingerprint())

    def prepare_data(self) -> None:
        if self._read_cache() is not None:
            return
        with cache_writer(self.cache_path, self.dims) as writer:
            self.write_cache(writer)
            writer.commit(self.cache_fingerprint())
        rank_zero_info(f"Cached decoded images in {self.cache_path}")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache = self._read_cache()
        if cache is None:
            self.prepare_data()
            cache = self._read_cache()
            assert cache is not None
        (train, train_labels), (test, test_labels) = cache["train"], cache["test"]
        if self.val_fraction > 0:
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            n_val = max(1, round(len(train) * self.val_fraction))
            val_idx, train_idx = order[:n_val], order[n_val:]
            self.splits = {"train": train[train_idx], "val": train[val_idx], "test": test}
            self.labels = {
                "train": train_labels[train_idx],
                "val": train_labels[val_idx],
                "test": test_labels,
            }
        else:  # a dataset published with a validation split (CelebA) uses it; the others validate on test
            val, val_labels = cache.get("val", (test, test_labels))
            self.splits = {"train": train, "val": val, "test": test}
            self.labels = {"train": train_labels, "val": val_labels, "test": test_labels}
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.device_resident and device.type != "cpu":
            self.splits = {name: images.to(device) for name, images in self.splits.items()}

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        images = self.splits[split]
        if train and len(images) < self.batch_size:
            raise UserError(
                f"{self.folder} has {len(images)} training images, fewer than {DATA}batch_size={self.batch_size}"
            )
        return DataLoader(
            InMemoryImages(images),
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,  # as the references: a short last batch would skew BatchNorm statistics
            collate_fn=keep_batch,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        return batch.float().div_(255)  # on the device, after the (cheap) uint8 transfer
