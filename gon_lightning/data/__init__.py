"""One DataModule per dataset on the shared in-memory base in `base.py`."""

from gon_lightning.data.base import ImageDataModule
from gon_lightning.data.celeba import CelebADataModule
from gon_lightning.data.coil20 import COIL20DataModule
from gon_lightning.data.folder import ImageFolderDataModule
from gon_lightning.data.latents import LatentDataModule
from gon_lightning.data.mnist5k import MNIST5kDataModule
from gon_lightning.data.torchvision_datasets import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "CIFAR10DataModule",
    "COIL20DataModule",
    "CelebADataModule",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageFolderDataModule",
    "LatentDataModule",
    "MNIST5kDataModule",
    "MNISTDataModule",
]
