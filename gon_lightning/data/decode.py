"""Decoding image files at scale: one file to a (C, S, S) uint8 array, many files in parallel into a mapped split.

Every format goes through PIL, which reads all of them (PNG, JPEG, WebP, BMP, TIFF, GIF, PPM/PGM); torchvision's
decoders read no BMP or TIFF and make libpng print a warning per PNG with an odd colour profile. A JPEG is shrunk
by a power of two while it is decoded (`Image.draft`) whenever the crop still has at least `size` pixels a side
afterwards: 1.4x faster than a full decode and faster than torchvision's `decode_jpeg` here (docs/performance.md,
"Decoding images"). Worker processes open the staging `.npy` file by path and write their own rows, so no image data is
pickled back and nothing larger than one image is ever held in memory.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps
from pytorch_lightning.utilities import rank_zero_warn
from torchvision.datasets.folder import IMG_EXTENSIONS

from gon_lightning.errors import DATA, UserError

if TYPE_CHECKING:
    from gon_lightning.data.cache import CacheWriter

# torchvision's ImageFolder extensions (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp) and GIF's first frame
IMAGE_EXTENSIONS = frozenset(ext.lstrip(".") for ext in (*IMG_EXTENSIONS, ".gif"))
FITS = ("center", "pad", "stretch")
PARALLEL_FROM = 512  # fewer files decode faster in this process than worker processes start
ORIENTATION = 0x0112  # the EXIF tag
SKIPPED = "skipped.txt"  # in a cache built with skip_broken: the files left out, one per line, and why


def is_image_name(name: str) -> bool:
    stem, _, extension = name.rpartition(".")
    return bool(stem) and not name.startswith(".") and extension.lower() in IMAGE_EXTENSIONS


def list_images(directory: str | Path, exclude: Path | None = None) -> list[str]:
    """Every image file under `directory`, recursively, sorted, as paths relative to it; hidden files and folders
    and other files are skipped, as is `exclude` (a cache kept inside the folder). Strings, not Paths: pathlib
    costs more than the listing itself for 200,000 files."""
    found: list[str] = []
    excluded = os.path.realpath(exclude) if exclude is not None else None
    for parent, folders, names in os.walk(directory, followlinks=True):
        folders[:] = sorted(
            f for f in folders if not f.startswith(".") and os.path.realpath(os.path.join(parent, f)) != excluded
        )
        relative = os.path.relpath(parent, directory)
        prefix = "" if relative == "." else relative + os.sep
        found.extend(prefix + name for name in sorted(names) if is_image_name(name))
    return found


@dataclass(frozen=True)
class Geometry:
    """How a decoded image becomes `size` x `size` with `channels` channels.

    fit: "center" crops the largest centred square (or a square of side `crop`, clipped to the image) and resizes
    it; "pad" resizes the whole image to fit and pads the rest with black; "stretch" resizes the whole image,
    changing its aspect ratio. Resizing is bilinear and antialiased (PIL's filters widen when they shrink).
    """

    size: int
    channels: int = 3
    fit: str = "center"
    crop: int | None = None

    def box(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The region of a width x height image that becomes the output (its `fit` box for "pad")."""
        if self.fit != "center":
            return (0, 0, width, height)
        side = min(width, height, self.crop or max(width, height))
        left, top = round((width - side) / 2), round((height - side) / 2)  # torchvision's CenterCrop offsets
        return (left, top, left + side, top + side)

    def scale(self, width: int, height: int) -> float:
        """The largest factor an image may shrink by before cropping and still give `size` pixels a side."""
        if self.fit == "stretch":
            return max(self.size / width, self.size / height)
        left, top, right, bottom = self.box(width, height)
        return self.size / min(right - left, bottom - top) if self.fit == "center" else self.size / max(width, height)


def _to_mode(image: Image.Image, channels: int) -> Image.Image:
    """RGB or L, converted properly: transparency composited over white, 16-bit and 32-bit grey scaled to 8 bits
    (PIL's own conversion clips them), CMYK, palette and bilevel images through PIL's conversions."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        wide = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and wide.max(initial=0) <= 1.0 else 65535.0
        image = Image.fromarray(np.clip(np.rint(wide * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image.alpha_composite(rgba)
    target = "RGB" if channels == 3 else "L"
    return image if image.mode == target else image.convert(target)


def decode_file(path: str | Path, geometry: Geometry) -> np.ndarray:
    """One image file as a (C, S, S) uint8 array: EXIF orientation applied, mode converted, fitted, resized."""
    size = geometry.size
    with Image.open(path) as image:
        orientation = image.getexif().get(ORIENTATION, 1)
        shown = image.size if orientation < 5 else image.size[::-1]  # orientations 5-8 swap width and height
        if image.format == "JPEG":
            factor = geometry.scale(*shown)
            if factor < 0.5:  # draft keeps every side >= the requested one, so the crop keeps >= size pixels
                mode = "L" if geometry.channels == 1 else "RGB"
                image.draft(mode, (math.ceil(image.width * factor), math.ceil(image.height * factor)))
        image.load()
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        image = _to_mode(image, geometry.channels)
        width, height = image.size
        if geometry.fit == "pad":
            ratio = size / max(width, height)
            inner = (max(1, round(width * ratio)), max(1, round(height * ratio)))
            resized = image.resize(inner, Image.Resampling.BILINEAR)
            image = Image.new(image.mode, (size, size))
            image.paste(resized, ((size - inner[0]) // 2, (size - inner[1]) // 2))
        else:  # the box in the shown image's pixels, scaled to what draft decoded
            left, top, right, bottom = geometry.box(*shown)
            sx, sy = width / shown[0], height / shown[1]
            box = (left * sx, top * sy, right * sx, bottom * sy)
            image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
        array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def decode_error(path: str | Path, geometry: Geometry) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_file(path, geometry), None
    except Exception as error:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError, ...
        return None, f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


# --- the parallel pool: each worker maps the split's file once and writes the rows it decodes ---

_target: np.ndarray | None = None


def _open_target(path: str) -> None:
    global _target
    _target = np.load(path, mmap_mode="r+")
    warnings.simplefilter("ignore")  # PIL's notes on odd metadata; a file that does not decode raises


def _decode_rows(task: tuple[int, Sequence[str], Geometry]) -> tuple[int, list[tuple[int, str]]]:
    start, paths, geometry = task
    assert _target is not None
    failed = []
    for row, path in enumerate(paths, start):
        array, error = decode_error(path, geometry)
        if error is None:
            _target[row] = array
        else:
            failed.append((row, error))
    return len(paths), failed


def decode_workers() -> int:
    """The cores this process may run on (a job's CPU allocation, not the machine's core count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _chunks(paths: Sequence[str | Path], size: int) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(paths), size):
        yield start, [str(p) for p in paths[start : start + size]]


def decode_into(
    target: np.ndarray,
    target_path: Path,
    paths: Sequence[str | Path],
    geometry: Geometry,
    workers: int | None = None,
    progress: str | None = None,
) -> dict[int, str]:
    """Decode `paths` into rows of `target` (mapped on `target_path`); the rows that failed, with why.

    Many files are decoded by a pool of `workers` processes (all the cores this process may use by default), each
    writing straight into the file; a progress bar labelled `progress` shows on long decodes.
    """
    from tqdm.auto import tqdm

    workers = workers or decode_workers()
    bar = tqdm(
        total=len(paths),
        desc=progress,
        unit="img",
        disable=progress is None or len(paths) < 2000,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    failed: dict[int, str] = {}
    with bar:
        if workers == 1 or len(paths) < PARALLEL_FROM:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for row, path in enumerate(paths):
                    array, error = decode_error(path, geometry)
                    if error is None:
                        target[row] = array
                    else:
                        failed[row] = error
                    bar.update()
            return failed
        if isinstance(target, np.memmap):
            target.flush()
        chunk = max(1, min(256, len(paths) // (workers * 8)))
        # fork: the workers need nothing but numpy and PIL, and start at once (spawn would import torch again)
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        tasks = ((start, names, geometry) for start, names in _chunks(paths, chunk))
        pool = context.Pool(workers, initializer=_open_target, initargs=(str(target_path),))
        try:
            for count, chunk_failed in pool.imap_unordered(_decode_rows, tasks):
                failed.update(chunk_failed)
                bar.update(count)
            pool.close()
        finally:
            pool.terminate()  # at once on an error or Ctrl-C; after close, only reaps the finished workers
            pool.join()
    return failed


def decode_splits(
    writer: CacheWriter,
    splits: dict[str, tuple[Sequence[str], Sequence[int]]],
    geometry: Geometry,
    skip_broken: bool,
    where: Path,
) -> None:
    """Decode each split's files into `writer`, keeping the images that decode, in order.

    A file that does not decode stops everything with one line naming the count and the first few, unless
    `skip_broken`: then the split keeps the others, the run says how many it skipped, and `skipped.txt` in the
    cache lists them (read again by `warn_skipped` whenever the cache is used).
    """
    broken: list[tuple[str, str]] = []
    for name, (paths, labels) in splits.items():
        images, label_rows = writer.open_split(name, len(paths))
        label_rows[:] = labels
        failed = decode_into(images, writer.staging / f"{name}.npy", paths, geometry, progress=f"decoding {name}")
        kept = [row for row in range(len(paths)) if row not in failed]
        broken.extend((paths[row], failed[row]) for row in sorted(failed))
        first_gap = min(failed, default=len(paths))
        for new, old in enumerate(kept[first_gap:], first_gap):  # close the gaps, in order
            images[new] = images[old]
            label_rows[new] = label_rows[old]
        writer.close_split(name, len(kept))
    if not broken:
        return
    total = sum(len(paths) for paths, _ in splits.values())
    listed = ", ".join(f"{path} ({why})" for path, why in broken[:3]) + (", ..." if len(broken) > 3 else "")
    if not skip_broken:
        raise UserError(
            f"{len(broken)} of {total} image files under {where} do not decode: {listed}. Repair or remove them, "
            f"or pass --{DATA}skip_broken true to train without them"
        )
    (writer.staging / SKIPPED).write_text("".join(f"{path}\t{why}\n" for path, why in broken))
    warn_skipped(writer.path, broken_count=len(broken), total=total)


def warn_skipped(cache: Path, broken_count: int | None = None, total: int | None = None) -> None:
    """Say (again) that the cache at `cache` leaves out files that did not decode, if it does."""
    if broken_count is None:
        listing = cache / SKIPPED
        if not listing.is_file():
            return
        broken_count = len(listing.read_text().splitlines())
    if broken_count:
        of = f" of {total}" if total else ""
        rank_zero_warn(
            f"skipped {broken_count}{of} image files that do not decode ({DATA}skip_broken); "
            f"they are listed in {cache / SKIPPED}"
        )
