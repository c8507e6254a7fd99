"""Decode throughput of CelebA-like JPEGs (178x218, quality 90) to size x size, images/s, measured side by side.

    python benchmarks/decode.py                      # 4,000 images, 64 px, centre crop 140, all allowed cores
    python benchmarks/decode.py --images 20000 --size 128

One core, one decoder after another on the same files: PIL full decode, PIL draft mode (the JPEG shrunk by a power
of two while it is decoded), torchvision's `decode_jpeg`; each one decodes, centre-crops and resizes (antialiased)
to a (3, S, S) uint8 array. Then the project's path: `ImageFolderDataModule.prepare_data` on the folder (listing,
fingerprint, the worker pool writing into the mapped cache, commit), on every core this process may use.
The files are generated smooth faces-like images (a few blobs and gradients, JPEG-compressed), read once
beforehand so the page cache holds them: this measures decoding, not the disk.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.v2.functional import center_crop, resize

from gon_lightning.data import CelebADataModule, ImageFolderDataModule
from gon_lightning.data.decode import Geometry, decode_file, decode_workers

WIDTH, HEIGHT = 178, 218


def write_images(folder: Path, count: int) -> list[Path]:
    """CelebA-sized JPEGs with smooth structure (random noise would make them several times larger)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    paths = []
    for i in range(count):
        image = np.zeros((HEIGHT, WIDTH, 3), np.float32) + rng.uniform(0, 255, 3)
        for _ in range(6):
            cy, cx, r = rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH), rng.uniform(15, 60)
            image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None] * rng.uniform(-120, 120, 3)
        image += rng.normal(0, 4, image.shape)  # a little grain, like a photograph
        path = folder / f"{i:06d}.jpg"
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def pil_full(path: Path, size: int, crop: int) -> np.ndarray:
    with Image.open(path) as image:
        left, top = round((image.width - crop) / 2), round((image.height - crop) / 2)
        out = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR, (left, top, left + crop, top + crop))
        return np.asarray(out).transpose(2, 0, 1)


def torchvision_jpeg(path: Path, size: int, crop: int) -> np.ndarray:
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    image = decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=True)
    return resize(center_crop(image, [crop, crop]), [size, size], antialias=True).numpy()


def cpu_seconds() -> tuple[float, float]:
    """CPU time of this process and of its reaped children (the decode workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def timed(label: str, count: int, work: Callable[[], object]) -> float:
    """Run `work` (on `count` images); print images per wall second and per CPU second (the second holds still
    when other jobs share the cores)."""
    wall, (own, workers) = time.perf_counter(), cpu_seconds()
    work()
    after = cpu_seconds()
    wall, own, workers = time.perf_counter() - wall, after[0] - own, after[1] - workers
    cpu = own + workers
    split = f"; CPU {own:.2f} s here + {workers:.2f} s in workers" if workers else ""
    print(f"  {label:<44} {count / wall:8,.0f} images/s {count / cpu:8,.0f} per CPU-second  ({wall:.2f} s{split})")
    return count / cpu


def rate(label: str, decode: Callable[[Path], np.ndarray], paths: list[Path]) -> float:
    decode(paths[0])  # warm
    return timed(label, len(paths), lambda: [decode(path) for path in paths])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--single", type=int, default=1500, help="images for each one-core measurement")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=140)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cores = decode_workers()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {cores} allowed; torch threads 1")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "celeba"
        (folder / "img_align_celeba").mkdir(parents=True)
        paths = write_images(folder / "img_align_celeba", args.images)
        for path in paths:
            path.read_bytes()  # into the page cache
        size, crop = args.size, args.crop
        geometry = Geometry(size, 3, "center", crop)
        single = paths[: args.single]
        print(f"one core, {len(single)} {WIDTH}x{HEIGHT} JPEGs -> centre crop {crop} -> {size} px:")
        full = rate("PIL, full decode", lambda p: pil_full(p, size, crop), single)
        draft = rate("PIL, draft mode (decode_file, the project's)", lambda p: decode_file(p, geometry), single)
        tv = rate("torchvision decode_jpeg + resize(antialias)", lambda p: torchvision_jpeg(p, size, crop), single)
        print(f"  per CPU-second: draft/full {draft / full:.2f}, torchvision/draft {tv / draft:.2f}")
        partition = "".join(f"{p.name} {0 if i % 10 < 8 else i % 10 - 7}\n" for i, p in enumerate(paths))
        (folder / "list_eval_partition.txt").write_text(partition)
        contenders = {
            "CelebADataModule": CelebADataModule(tmp, image_size=size, crop=crop, download=False),
            "ImageFolderDataModule (centre square)": ImageFolderDataModule(
                folder / "img_align_celeba", image_size=size, cache_dir=Path(tmp) / "cache"
            ),
        }
        print(f"prepare_data (list, fingerprint, decode in {cores} worker processes, commit), {len(paths)} images:")
        for label, data in contenders.items():
            per_cpu = timed(label, len(paths), data.prepare_data)
            print(f"  {'':<44} with {cores} free cores: CelebA's 202,599 in {202_599 / (per_cpu * cores):.0f} s")


if __name__ == "__main__":
    main()
