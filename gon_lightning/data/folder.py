"""A folder of one's own images: every image file under `root`, decoded once into the cache at any size."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch

from gon_lightning.data.base import ImageDataModule
from gon_lightning.data.cache import CacheWriter
from gon_lightning.data.decode import FITS, Geometry, decode_splits, is_image_name, list_images, warn_skipped
from gon_lightning.errors import DATA, UserError, require

SPLIT_FOLDERS = ("train", "test", "val")
UNLABELLED = -1  # an image directly in a split's folder, in no class subfolder


def default_cache_dir(root: Path) -> Path:
    """Outside the image folder (which may be read-only or shared): the user's cache, one folder per image folder."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gon_lightning" / "folders"
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return base / f"{root.resolve().name or 'root'}-{digest}"


class ImageFolderDataModule(ImageDataModule):
    """Every image under `root`, recursively: PNG, JPEG, WebP, BMP, TIFF, PPM/PGM and GIF (first frame), extensions
    in any case; hidden files and folders and other files are ignored.

    Labels follow torchvision's ImageFolder: the index of an image's first-level subfolder in sorted order
    (-1 for images directly in the folder). A folder holding `train/` and `test/` (and optionally `val/`) is split
    as given; any other folder is split with a fixed seed, `test_fraction` of it for testing. The decoded cache
    goes to `cache_dir` (default: `$XDG_CACHE_HOME/gon_lightning/folders/<name>-<hash of its path>`, or
    `~/.cache/...`), and is rebuilt when a file is added, removed, resized or touched, or the size, channels or
    fit change.

    Args:
        root: the folder of images.
        image_size: the side of the square images the models see.
        channels: 3 (RGB) or 1 (grey). Transparency is composited over white, 16-bit images scaled to 8 bits,
            CMYK, palette and bilevel images converted; EXIF orientation is applied.
        fit: how a non-square image becomes square: "center" crops the largest centred square (default),
            "pad" keeps the whole image and pads it with black, "stretch" squeezes it. Then an antialiased resize.
        test_fraction: share held out for testing (default 0.1) when the folder has no train/ and test/.
        skip_broken: train without the files that do not decode (truncated, empty, corrupt) instead of stopping;
            the run says how many it skipped and the cache lists them in skipped.txt.
        cache_dir: where the decoded cache goes (a folder inside `root` is not read as images).
        batch_size, val_fraction, seed, device_resident, cache_per_node, stream: as for every DataModule
            (`ImageDataModule`).
    """

    def __init__(
        self,
        root: str | Path,
        batch_size: int = 64,
        image_size: int = 64,
        channels: int = 3,
        fit: str = "center",
        test_fraction: float | None = None,
        skip_broken: bool = False,
        cache_dir: str | Path | None = None,
        val_fraction: float = 0.0,
        seed: int = 0,
        device_resident: bool = True,
        cache_per_node: bool = True,
        stream: str | None = None,
    ) -> None:
        super().__init__(
            root, batch_size, image_size, val_fraction, seed, False, device_resident, cache_per_node, stream
        )
        require(channels in (1, 3), DATA + "channels", channels, "1 (grey) or 3 (RGB)")
        require(fit in FITS, DATA + "fit", fit, " or ".join(FITS))
        if test_fraction is not None:
            require(0.0 < test_fraction < 1.0, DATA + "test_fraction", test_fraction, "in (0, 1)")
        if not self.root.is_dir():
            raise UserError(f"{DATA}root {self.root} is not a folder; point it at a folder of images")
        self.channels = channels
        self.fit = fit
        self.test_fraction = test_fraction
        self.skip_broken = skip_broken
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir(self.root)
        self._splits_files: dict[str, tuple[list[str], list[int]]] | None = None
        self._fingerprint: dict[str, Any] | None = None
        self._warned_skipped = False

    @property
    def folder(self) -> str:  # named in the base's errors
        return str(self.root)

    @property
    def data_dir(self) -> Path:
        return self.root

    @property
    def cache_path(self) -> Path:
        return self.cache_dir / f"gon_lightning_{self.image_size}px"

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.image_size, self.channels, self.fit)

    def split_files(self) -> dict[str, tuple[list[str], list[int]]]:
        """{split: (file paths, labels)}, listed once per DataModule (the fingerprint and the decode must agree)."""
        if self._splits_files is None:
            self._splits_files = self._list_splits()
        return self._splits_files

    def _list_splits(self) -> dict[str, tuple[list[str], list[int]]]:
        given = (self.root / "train").is_dir() and (self.root / "test").is_dir()
        if not given:
            names = list_images(self.root, exclude=self.cache_dir)
            if not names:
                raise UserError(f"no image files under {self.root} (PNG, JPEG, WebP, BMP, TIFF, GIF); check data.root")
            fraction = 0.1 if self.test_fraction is None else self.test_fraction
            order = torch.randperm(len(names), generator=torch.Generator().manual_seed(0)).tolist()
            n_test = max(1, round(len(names) * fraction))
            labels = _labels(names)
            files = [os.path.join(self.root, name) for name in names]
            splits = {
                name: ([files[i] for i in rows], [labels[i] for i in rows])
                for name, rows in (("train", sorted(order[n_test:])), ("test", sorted(order[:n_test])))
            }
        else:
            if self.test_fraction is not None:
                raise UserError(
                    f"{self.root} holds train/ and test/, which are used as given: drop {DATA}test_fraction"
                )
            outside = [
                entry / name
                for entry in sorted(self.root.iterdir())
                if entry.name not in SPLIT_FOLDERS and not entry.name.startswith(".")
                for name in (
                    list_images(entry, exclude=self.cache_dir) if entry.is_dir() else [""] * is_image_name(entry.name)
                )
            ]
            if outside:
                raise UserError(
                    f"{self.root} holds train/ and test/ and also {len(outside)} images outside them (first: "
                    f"{outside[0]}); move them into train/ or test/, or point data.root elsewhere"
                )
            listed = {name: list_images(self.root / name) for name in SPLIT_FOLDERS if (self.root / name).is_dir()}
            classes = sorted({label for names in listed.values() for label in _classes(names)})
            splits = {}
            for split, names in listed.items():
                if not names:
                    raise UserError(f"no image files under {self.root / split}; add some or remove the folder")
                splits[split] = ([os.path.join(self.root, split, n) for n in names], _labels(names, classes))
        n_train = len(splits["train"][0])
        if n_train < self.batch_size:
            raise UserError(
                f"{self.root} has {n_train} training images, fewer than one batch ({DATA}batch_size="
                f"{self.batch_size}); add images or lower the batch size"
            )
        return splits

    def cache_fingerprint(self) -> dict[str, Any]:
        if self._fingerprint is None:
            self._fingerprint = self._stat_files()
        return self._fingerprint

    def _stat_files(self) -> dict[str, Any]:
        """Each file's path (relative to root), label, size and modification time, hashed."""
        prefix = len(os.path.join(self.root, ""))
        lines = []
        for name, (files, labels) in sorted(self.split_files().items()):
            for path, label in zip(files, labels, strict=True):
                stat = os.stat(path)
                lines.append(f"{name}\t{path[prefix:]}\t{label}\t{stat.st_size}\t{stat.st_mtime_ns}\n")
        listing = hashlib.sha256("".join(lines).encode()).hexdigest()
        return {"files": listing, "channels": self.channels, "fit": self.fit}

    def decode(self):  # the abstract hook of small datasets; this one decodes straight into the cache
        raise NotImplementedError

    def write_cache(self, writer: CacheWriter) -> None:
        decode_splits(writer, self.split_files(), self.geometry, self.skip_broken, self.root)
        self._warned_skipped = True

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if not self._warned_skipped:  # a cache built earlier with skip_broken: say again what it leaves out
            warn_skipped(self.cache_path)
            self._warned_skipped = True


def _classes(names: list[str]) -> set[str]:
    return {name.split(os.sep, 1)[0] for name in names if os.sep in name}


def _labels(names: list[str], classes: list[str] | None = None) -> list[int]:
    """torchvision's ImageFolder labels: the index of each relative path's first folder among `classes`."""
    index = {name: i for i, name in enumerate(sorted(_classes(names)) if classes is None else classes)}
    return [index[name.split(os.sep, 1)[0]] if os.sep in name else UNLABELLED for name in names]
