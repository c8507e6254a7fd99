"""One base for every dataset: decode once into a uint8 tensor, cache it on disk, serve batches from memory.

Per-sample PIL decoding and resizing is an order of magnitude slower than indexing a decoded tensor for
32x32 images (docs/design.md, "The data path"), so each DataModule only says how to decode its files; this base resizes,
caches, splits and serves. Batches are whole-tensor gathers (`__getitems__`), kept on the GPU when training
there; Lightning's DistributedSampler shards the indices by rank under DDP.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from gon_lightning.errors import DATA, UserError, positive_int, require

Split = tuple[Tensor, Tensor]  # images (N, C, H, W) uint8, labels (N,) int64
CACHE_FORMAT = 1


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


@contextmanager
def removed_on_error(directory: Path) -> Iterator[None]:
    """Undo a failed download or extraction: delete what appeared under `directory`, keep what was there."""
    before = set(directory.rglob("*")) if directory.exists() else set()
    existed = directory.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            for path in sorted(set(directory.rglob("*")) - before, key=lambda p: len(p.parts), reverse=True):
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise


def fetch(urls: Sequence[str], target: Path, timeout: float = 60.0) -> None:
    """Download the first of `urls` that answers into `target`, atomically (temporary file, then rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in urls:
        rank_zero_info(f"Downloading {url} -> {target}")
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
                shutil.copyfileobj(response, out)
            os.replace(tmp, target)
            return
        except OSError as error:  # URLError, HTTPError and timeouts are OSErrors
            errors.append(f"{url}: {error}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise UserError(f"could not download {target.name}:\n  " + "\n  ".join(errors))


def atomic_save(obj: object, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class ImageDataModule(pl.LightningDataModule, ABC):
    """Base DataModule (abstract): subclasses set `folder` and `channels` and implement `decode`.

    Args:
        root: directory holding the datasets (each in its own folder, in torchvision's layout where
            torchvision has the dataset); downloads and the decoded cache go there too.
        batch_size: images per batch (per process under DDP).
        image_size: images are resized once, at decode time, to image_size x image_size.
        val_fraction: share of the training set held out for validation. 0 validates on the test set,
            which is what the reference scripts report per epoch (their curves are test-set curves).
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
        return self.data_dir / f"gon_lightning_{self.image_size}px.pt"

    @abstractmethod
    def decode(self) -> dict[str, Split]:
        """Read (downloading if allowed) the dataset at its native size: {"train": ..., "test": ...}."""

    def _read_cache(self) -> dict[str, Split] | None:
        if not self.cache_path.exists():
            return None
        try:
            cache = torch.load(self.cache_path, weights_only=True)
            if cache.get("format") != CACHE_FORMAT or cache["train"][0].shape[1:] != self.dims:
                raise ValueError("stale format or shape")
            return {split: cache[split] for split in ("train", "test")}
        except Exception as error:
            rank_zero_warn(f"ignoring unreadable cache {self.cache_path} ({error}); decoding again")
            return None

    def prepare_data(self) -> None:
        if self._read_cache() is not None:
            return
        splits = self.decode()
        cache: dict[str, object] = {"format": CACHE_FORMAT}
        for name, (images, labels) in splits.items():
            if images.shape[-2:] != (self.image_size, self.image_size):
                images = resize(images, [self.image_size, self.image_size], antialias=True)
            cache[name] = (images.contiguous(), labels)
        atomic_save(cache, self.cache_path)
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
        else:
            self.splits = {"train": train, "val": test, "test": test}
            self.labels = {"train": train_labels, "val": test_labels, "test": test_labels}
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
