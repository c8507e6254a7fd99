"""CelebA (aligned and cropped faces, 178x218 JPEGs) in torchvision's layout, with its official partition.

`<root>/celeba/img_align_celeba/*.jpg` and `<root>/celeba/list_eval_partition.txt` (lines `000001.jpg 0`,
0/1/2 = train/valid/test: 162,770 / 19,867 / 19,962 images) are all this reads; the partition file is parsed here,
so a copy without torchvision's other four text files (or with other checksums) works. When they are missing,
torchvision's own download (Google Drive through `gdown`) is tried.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torchvision import datasets

from gon_lightning.data.base import ImageDataModule
from gon_lightning.data.cache import CacheWriter
from gon_lightning.data.decode import Geometry, decode_splits, warn_skipped
from gon_lightning.data.download import removed_on_error
from gon_lightning.errors import DATA, UserError, positive_int

IMAGES, PARTITION = "img_align_celeba", "list_eval_partition.txt"
SPLITS = {"0": "train", "1": "val", "2": "test"}
SITE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


class CelebADataModule(ImageDataModule):
    """CelebA at `image_size` (64 or 128 px in the literature): a centred `crop` x `crop` square of each 178x218
    face, resized with antialiasing; validation uses the official valid split unless `val_fraction` is set.

    Centre crops in the literature: 140 (default; NCSNv2, Song & Ermon 2020, at 64 px, and the crop most
    score-based and VAE work at 64 and 128 px follow), 108 (DCGAN-tensorflow, carpedm20, for 64 px), 148
    (AntixK/PyTorch-VAE, 64 px). 178 keeps the whole width.

    Args:
        crop: side of the centred square cut from each image before resizing (at most 178).
        skip_broken: train without image files that do not decode instead of stopping.
        root, batch_size, image_size, val_fraction, seed, download, device_resident, cache_per_node, stream: as
            `ImageDataModule`.
    """

    folder = "celeba"
    channels = 3

    def __init__(
        self,
        root: str | Path = "data",
        batch_size: int = 64,
        image_size: int = 64,
        crop: int = 140,
        skip_broken: bool = False,
        val_fraction: float = 0.0,
        seed: int = 0,
        download: bool = True,
        device_resident: bool = True,
        cache_per_node: bool = True,
        stream: str | None = None,
    ) -> None:
        super().__init__(
            root, batch_size, image_size, val_fraction, seed, download, device_resident, cache_per_node, stream
        )
        positive_int(DATA + "crop", crop)
        if crop > 178:
            raise UserError(f"{DATA}crop must be at most 178 (CelebA's aligned images are 178 pixels wide), got {crop}")
        self.crop = crop
        self.skip_broken = skip_broken
        self._warned_skipped = False

    def cache_fingerprint(self) -> dict[str, Any]:
        partition = self.data_dir / PARTITION
        stat = partition.stat() if partition.is_file() else None
        return {"crop": self.crop, "partition": [stat.st_size, stat.st_mtime_ns] if stat else None}

    def decode(self):  # the abstract hook of small datasets; this one decodes straight into the cache
        raise NotImplementedError

    def _missing(self) -> list[str]:
        return [name for name in (IMAGES, PARTITION) if not (self.data_dir / name).exists()]

    def _not_found(self, why: str) -> UserError:
        return UserError(
            f"CelebA is not in {self.data_dir} ({', '.join(self._missing())} missing) and {why}. Put the aligned "
            f"images there as {IMAGES}/000001.jpg ... and the partition as {PARTITION} (both from {SITE}, "
            f"'Align&Cropped Images' and 'Train/Val/Test Partitions'), or point {DATA}root at the folder "
            "holding celeba/"
        )

    def ensure_files(self) -> None:
        """Download CelebA through torchvision when it is missing and allowed; say where to put it otherwise."""
        if not self._missing():
            return
        if not self.download:
            raise self._not_found(f"{DATA}download is false")
        try:
            with removed_on_error(self.data_dir):
                datasets.CelebA(str(self.root), split="all", target_type=[], download=True)
        except (OSError, RuntimeError) as error:  # offline, Drive's quota, gdown missing, a checksum mismatch
            raise self._not_found(f"the download failed ({error})") from error

    def split_files(self) -> dict[str, tuple[list[str], list[int]]]:
        self.ensure_files()
        partition, images = self.data_dir / PARTITION, self.data_dir / IMAGES
        present = set(os.listdir(images))
        splits: dict[str, tuple[list[str], list[int]]] = {name: ([], []) for name in SPLITS.values()}
        missing = []
        for number, line in enumerate(partition.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[1] not in SPLITS:
                raise UserError(f"{partition} line {number} is {line!r}, expected '<name>.jpg <0|1|2>'")
            if fields[0] not in present:
                missing.append(fields[0])
            files, labels = splits[SPLITS[fields[1]]]
            files.append(os.path.join(images, fields[0]))
            labels.append(0)
        if missing:
            raise UserError(
                f"{len(missing)} images listed in {partition} are not in {images} (first: {missing[0]}); "
                "unzip the whole img_align_celeba.zip there"
            )
        for name, (files, _) in splits.items():
            if not files:
                raise UserError(f"{partition} lists no {name} images; it should hold CelebA's official partition")
        return splits

    def write_cache(self, writer: CacheWriter) -> None:
        geometry = Geometry(self.image_size, 3, "center", self.crop)
        decode_splits(writer, self.split_files(), geometry, self.skip_broken, self.data_dir / IMAGES)
        self._warned_skipped = True

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if not self._warned_skipped:
            warn_skipped(self.cache_path)
            self._warned_skipped = True
