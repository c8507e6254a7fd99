"""One base for every dataset: decode once into a uint8 cache on disk, map it, serve batches from it.

Per-sample PIL decoding and resizing is an order of magnitude slower than indexing a decoded tensor for
32x32 images (docs/design.md, "The data path"), so each DataModule only says how to decode its files; this base
resizes, caches (`cache.py`: one memory-mapped file per split, shared by every process of a node), splits and
serves. Batches are whole-tensor gathers (`__getitems__`), kept on the GPU when training there. A held-out
validation part is a list of rows of the one mapped array, not a copy. The training order (`sampler.py`) is a
fresh permutation every epoch, sharded by rank under DDP, that a checkpoint written mid-epoch resumes exactly.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms.v2.functional import resize

from gon_lightning.data import streaming
from gon_lightning.data.cache import CacheWriter, Split, cache_writer, read_cache
from gon_lightning.data.sampler import EpochSampler, TrainOrder
from gon_lightning.errors import DATA, UserError, positive_int, require, writing


class InMemoryImages(Dataset):
    """A uint8 image tensor (or the rows `rows` of it) served a batch at a time.

    `images` is the mapped cache array (or its copy on the GPU); a held-out part of a split is the same array and
    the list of its rows, so train and validation share one copy and a batch is still one gather of the array.
    """

    def __init__(self, images: Tensor, labels: Tensor | None = None, rows: Tensor | None = None) -> None:
        self.images = images
        self.labels = labels
        self.rows = rows

    def __len__(self) -> int:
        return len(self.images) if self.rows is None else len(self.rows)

    def __getitem__(self, index: int) -> Tensor:
        return self.images[index if self.rows is None else int(self.rows[index])]

    def selected(self) -> Tensor:
        """The images as one tensor: the array itself, or a copy of the selected rows."""
        return self.images if self.rows is None else self.images[self.rows]

    def selected_labels(self) -> Tensor:
        assert self.labels is not None
        return self.labels if self.rows is None else self.labels[self.rows]

    def __getitems__(self, indices: Sequence[int]) -> Tensor:
        # the DataLoader hands a whole batch of indices: one gather instead of B lookups and a stack
        index = torch.as_tensor(indices)
        if self.rows is not None:
            index = self.rows[index]  # B integers on the host, then the same single gather of the array
        if self.images.is_cuda:
            # copied from pageable memory, the indices would make the host wait for every kernel queued on the
            # stream (a sync per batch); staged in pinned memory and copied non_blocking, the CPU keeps running
            # ahead (the caching host allocator keeps the pinned source alive until the copy has run)
            index = index.pin_memory()
        return self.images[index.to(self.images.device, non_blocking=True)]


def keep_batch(batch: Tensor) -> Tensor:
    return batch


class _Selected(Mapping):
    """Read-only {split: tensor} view of the served splits (`selected` or `selected_labels` of each)."""

    def __init__(self, datasets: dict[str, InMemoryImages], labels: bool) -> None:
        self.datasets, self.labels = datasets, labels

    def __getitem__(self, name: str) -> Tensor:
        dataset = self.datasets[name]
        return dataset.selected_labels() if self.labels else dataset.selected()

    def __iter__(self) -> Iterator[str]:
        return iter(self.datasets)

    def __len__(self) -> int:
        return len(self.datasets)


def fixed_split(images: Tensor, labels: Tensor, test_fraction: float = 0.2) -> dict[str, Split]:
    """A seeded split for datasets published without one; the seed is fixed so the test set never moves."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    n_test = round(len(images) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


class ImageDataModule(TrainOrder, pl.LightningDataModule, ABC):
    """Base DataModule (abstract): subclasses set `folder` and `channels` and implement `decode`.

    `extractor` names the features sample quality is measured on by default (`gon_lightning.metrics`): `lenet`, a
    classifier trained on the dataset's labels, for the MNIST-like grey datasets; `inception` (the FID's
    Inception-v3) for colour and unlabelled data. It is a property of the dataset, declared once per class, so the
    meaning of a default figure never changes silently.

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
        cache_per_node: build the decoded cache once per node (local rank 0 while the node's other ranks wait),
            for a `root` on each node's own disk. False builds it once per job (global rank 0), for a `root` on
            a file system every node sees.
        stream: serve every split with litdata's streaming backend (`streaming.py`; the `streaming` extra) from
            this folder or object-store URL (s3://...) instead of mapping the decoded cache. A local folder
            that holds no split yet is written once from the decoded cache; a URL must have been written
            beforehand (the same command with a local folder, then copied up).
    """

    folder: ClassVar[str]
    channels: ClassVar[int] = 1
    extractor: ClassVar[str] = "inception"

    def __init__(
        self,
        root: str | Path = "data",
        batch_size: int = 64,
        image_size: int = 32,
        val_fraction: float = 0.0,
        seed: int = 0,
        download: bool = True,
        device_resident: bool = True,
        cache_per_node: bool = True,
        stream: str | None = None,
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
        if stream is not None and val_fraction > 0:
            raise UserError(
                f"{DATA}val_fraction holds out rows of the mapped cache; with {DATA}stream the splits are streamed "
                "as written: leave val_fraction at 0"
            )
        self.stream = stream
        self.stream_splits: list[str] = []
        self.prepare_data_per_node = cache_per_node  # Lightning's switch: who runs prepare_data, others wait
        self.datasets: dict[str, InMemoryImages] = {}

    @property
    def splits(self) -> Mapping[str, Tensor]:
        """Each split's images, uint8 (N, C, H, W): the mapped array, or a copy of a held-out part's rows."""
        return _Selected(self.datasets, labels=False)

    @property
    def labels(self) -> Mapping[str, Tensor]:
        return _Selected(self.datasets, labels=True)

    @property
    def dims(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """`dims`, under the name the CLI links into an image model (a DataModule of latents has none, so a prior
        over latents is not handed an image shape)."""
        return self.dims

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
        if self.stream is not None and (streaming.is_remote(self.stream) or self._streamed_splits()):
            return  # streamed as written: nothing is decoded here
        cache = self._read_cache()
        if cache is None:
            nothing_left = "nothing of it is left behind (it is built aside and renamed into place when whole)"
            with (
                writing("the decoded cache", self.cache_path.parent, lambda: nothing_left),
                cache_writer(self.cache_path, self.dims) as writer,
            ):
                self.write_cache(writer)
                writer.commit(self.cache_fingerprint())
            rank_zero_info(f"Cached decoded images in {self.cache_path}")
            cache = self._read_cache()
            assert cache is not None
        if self.stream is not None:
            counts = {name: len(images) for name, (images, _) in cache.items()}
            meta = {"dims": list(self.dims), "fingerprint": self.cache_fingerprint()}
            nothing_left = "none of its chunks are left behind; the decoded cache is intact"
            with writing("litdata chunks", self.stream, lambda: nothing_left):
                streaming.write_stream(self.cache_path, counts, self.stream, json.loads(json.dumps(meta)))
            rank_zero_info(f"Wrote the decoded images as litdata chunks to {self.stream}")

    def _streamed_splits(self) -> list[str] | None:
        """The splits a local `stream` holds, None when it holds none; one written for other images is refused."""
        meta = streaming.written(self.stream)
        if meta is None:
            return None
        if meta["dims"] != list(self.dims) or meta["fingerprint"] != json.loads(json.dumps(self.cache_fingerprint())):
            raise UserError(
                f"{DATA}stream {self.stream} holds {tuple(meta['dims'])} images of another dataset or size "
                f"(this one is {self.dims}): give each dataset and image size its own folder, or delete it"
            )
        return meta["splits"]

    def setup(self, stage: str | None = None) -> None:
        if self.stream is not None:
            streaming.litdata()  # installed, or a clear error now
            self.stream_splits = self._streamed_splits() or ["test", "train"]
            return
        if self.datasets:
            return
        cache = self._read_cache()
        if cache is None:
            if self.trainer is not None and self.trainer.world_size > 1:
                # prepare_data ran on (local) rank 0 and everyone waited for it, yet this rank finds nothing
                raise UserError(
                    f"the decoded cache {self.cache_path} is missing on this node after rank 0 built it: with "
                    f"{DATA}cache_per_node false, {DATA}root must be on a file system every node sees"
                )
            self.prepare_data()
            cache = self._read_cache()
            assert cache is not None
        train, test = InMemoryImages(*cache["train"]), InMemoryImages(*cache["test"])
        if self.val_fraction > 0:
            # rows of the one mapped array, not copies: a batch is the same gather of the same bytes
            order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed))
            n_val = max(1, round(len(train) * self.val_fraction))
            val = InMemoryImages(train.images, train.labels, rows=order[:n_val])
            train = InMemoryImages(train.images, train.labels, rows=order[n_val:])
        else:  # a dataset published with a validation split (CelebA) uses it; the others validate on test
            val = InMemoryImages(*cache["val"]) if "val" in cache else test
        self.datasets = {"train": train, "val": val, "test": test}
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        if self.device_resident and device.type != "cpu":
            self.to_device(device)

    def to_device(self, device: torch.device) -> None:
        """Copy the images to `device` (each array once, however many splits serve rows of it)."""
        copies: dict[int, Tensor] = {}
        for dataset in self.datasets.values():
            source = dataset.images
            dataset.images = copies.setdefault(id(source), source.to(device))

    def _loader(self, split: str, sampler: EpochSampler | None = None) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,  # as the references: a short last batch would skew BatchNorm statistics
            collate_fn=keep_batch,
        )

    def _stream_loader(self, split: str, train: bool = False) -> Any:
        return streaming.loader(self.stream, split, self.batch_size, train, self.shared_seed())

    def train_dataloader(self) -> DataLoader:
        if self.stream is not None:
            return self._stream_loader("train", train=True)
        return self._loader("train", self.training_sampler(len(self.datasets["train"]), "images"))

    def val_dataloader(self) -> DataLoader:
        if self.stream is not None:
            return self._stream_loader("val" if "val" in self.stream_splits else "test")
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._stream_loader("test") if self.stream is not None else self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()

    def labels_at(self, split: str, indices: Tensor) -> Tensor | None:
        """The labels of the images at `indices` of `split`'s dataset (as its loader indexes it), None where the
        split has no labels. Batches stay images only: a callback that needs their labels (the online linear probe)
        asks here with the batch's indices, so what the model sees, and so its weights, do not change."""
        dataset = self.datasets.get(split)
        if dataset is None or dataset.labels is None:
            return None
        rows = indices if dataset.rows is None else dataset.rows[indices]
        return dataset.labels[rows]

    def train_batch_indices(self, batch_idx: int) -> Tensor | None:
        """The training-split indices of this epoch's batch `batch_idx` (None when streamed)."""
        if self.train_sampler is None:
            return None
        return self.train_sampler.batch_indices(batch_idx, self.batch_size)

    def on_after_batch_transfer(self, batch: Tensor, dataloader_idx: int) -> Tensor:
        return batch.float().div_(255)  # on the device, after the (cheap) uint8 transfer
