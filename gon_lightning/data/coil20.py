"""COIL-20, processed: 20 objects x 72 poses, 128x128 grey PNGs named obj{N}__{i}.png."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_png, read_file

from gon_lightning.data.base import ImageDataModule, Split, fixed_split
from gon_lightning.data.download import fetch, removed_on_error, safe_extract
from gon_lightning.errors import UserError

URLS = (
    "https://www.cs.columbia.edu/CAVE/databases/SLAM_coil-20_coil-100/coil-20/coil-20-proc.zip",
    "https://cave.cs.columbia.edu/old/databases/SLAM_coil-20_coil-100/coil-20/coil-20-proc.zip",
)
ARCHIVE = "coil-20-proc.zip"
NAME = re.compile(r"obj(\d+)__(\d+)\.png")
OBJECTS, POSES, SIZE = 20, 72, 128


def verified_images(directory: Path) -> dict[tuple[int, int], Path]:
    """Map (object, pose) -> file for the 1440 expected PNGs, or say what is wrong."""
    found: dict[tuple[int, int], Path] = {}
    for path in directory.rglob("*.png"):
        match = NAME.fullmatch(path.name)
        if match:
            found[(int(match[1]), int(match[2]))] = path
    expected = {(obj, pose) for obj in range(1, OBJECTS + 1) for pose in range(POSES)}
    if set(found) != expected:
        missing = sorted(expected - set(found))
        raise UserError(
            f"COIL-20 in {directory} is incomplete: expected {len(expected)} images obj{{1..20}}__{{0..71}}.png, "
            f"found {len(set(found) & expected)}"
            + (f"; first missing: obj{missing[0][0]}__{missing[0][1]}.png" if missing else "")
            + ". Delete the folder to extract or download again."
        )
    return found


class COIL20DataModule(ImageDataModule):
    """COIL-20 (processed): 1440 grey 128x128 object images, split 80/20 (1152/288) with a fixed seed."""

    folder = "coil-20"
    extractor = "lenet"

    def decode(self) -> dict[str, Split]:
        extracted = self.data_dir / "coil-20-proc"
        archive = self.data_dir / ARCHIVE
        if not extracted.is_dir():
            if not archive.is_file():
                if not self.download:
                    raise UserError(
                        f"COIL-20 is not in {self.data_dir}: expected {ARCHIVE} or its extracted folder "
                        "coil-20-proc/ there, and data.download is false"
                    )
                try:
                    fetch(URLS, archive)
                except UserError as error:
                    raise UserError(
                        f"COIL-20 is not in {self.data_dir} and {error}\n"
                        f"Place {ARCHIVE} (from {URLS[0]}) in {self.data_dir}, or run once with network access."
                    ) from error
            with removed_on_error(self.data_dir):
                safe_extract(archive, extracted)
        files = verified_images(extracted)
        images, labels = [], []
        for (obj, _pose), path in sorted(files.items()):
            try:
                image = decode_png(read_file(str(path)), ImageReadMode.GRAY)
            except RuntimeError as error:
                raise UserError(f"cannot decode {path} ({error}); delete {extracted} to extract again") from error
            if image.shape != (1, SIZE, SIZE):
                raise UserError(f"{path} is {tuple(image.shape[1:])}, expected {SIZE}x{SIZE} (processed COIL-20)")
            images.append(image)
            labels.append(obj - 1)
        return fixed_split(torch.stack(images), torch.tensor(labels))
