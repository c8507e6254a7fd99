"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's datasets (its on-disk layout and downloads)."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import torch
from torch import Tensor
from torchvision import datasets

from gon_lightning.data.base import ImageDataModule, Split
from gon_lightning.data.download import removed_on_error
from gon_lightning.errors import UserError


class TorchvisionDataModule(ImageDataModule):
    """A torchvision dataset with a train and a test split, found under `root` in torchvision's layout
    (abstract: subclasses name the dataset class, its files and how to read them)."""

    dataset_class: ClassVar[type[datasets.VisionDataset]]

    @abstractmethod
    def expected_files(self) -> list[str]: ...

    def _open(self, train: bool) -> datasets.VisionDataset:
        missing = [name for name in self.expected_files() if not (self.data_dir / name).is_file()]
        if missing and not self.download:
            raise UserError(self._not_found(missing, "data.download is false"))
        try:
            with removed_on_error(self.root):
                return self.dataset_class(str(self.root), train=train, download=self.download)
        except (OSError, RuntimeError) as error:
            if missing:  # the download was needed and failed (offline, or a mirror is down)
                raise UserError(self._not_found(missing, f"the download failed: {error}")) from error
            raise UserError(
                f"{self.dataset_class.__name__} files in {self.data_dir} are unreadable or corrupt ({error}). "
                "Delete them to download again, or replace them with intact copies."
            ) from error

    def _not_found(self, missing: list[str], why: str) -> str:
        return (
            f"{self.dataset_class.__name__} is not in {self.data_dir} and {why}.\n"
            f"Expected there: {', '.join(self.expected_files())} (missing: {', '.join(missing)}).\n"
            "Place the files there in torchvision's layout, point data.root at the directory that holds "
            f"{self.folder}/, or run once with network access."
        )

    @abstractmethod
    def _to_split(self, dataset: datasets.VisionDataset) -> Split: ...

    def decode(self) -> dict[str, Split]:
        return {"train": self._to_split(self._open(True)), "test": self._to_split(self._open(False))}


class MNISTDataModule(TorchvisionDataModule):
    """MNIST: 60,000 train and 10,000 test digits, 28x28 grey (resized to `image_size`)."""

    dataset_class = datasets.MNIST
    folder = "MNIST/raw"
    extractor = "lenet"

    def expected_files(self) -> list[str]:
        return [name.removesuffix(".gz") for name, _ in self.dataset_class.resources]

    @property
    def cache_path(self):  # beside raw/, where torchvision keeps its own processed files
        return self.data_dir.parent / f"gon_lightning_{self.image_size}px"

    def _to_split(self, dataset: datasets.VisionDataset) -> Split:
        return dataset.data.unsqueeze(1).contiguous(), torch.as_tensor(dataset.targets, dtype=torch.long)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: 60,000 train and 10,000 test clothing images, 28x28 grey."""

    dataset_class = datasets.FashionMNIST
    folder = "FashionMNIST/raw"


class CIFAR10DataModule(TorchvisionDataModule):
    """CIFAR-10: 50,000 train and 10,000 test colour images, 32x32."""

    dataset_class = datasets.CIFAR10
    folder = "cifar-10-batches-py"
    channels = 3

    def expected_files(self) -> list[str]:
        cls = datasets.CIFAR10
        return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]

    def _to_split(self, dataset: datasets.VisionDataset) -> Split:
        images: Tensor = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.as_tensor(dataset.targets, dtype=torch.long)
