"""Generated image files: a folder in every format and mode PIL writes, and a fake CelebA in torchvision's layout.

Imported by conftest.py (the fixtures) and by the tests that build their own trees.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

CELEBA_SIZE = (178, 218)


def config_image_size(config: Path) -> int:
    """The image size a config asks of its DataModule (32 where it names none)."""
    settings = yaml.safe_load(config.read_text())
    return settings["data"].get("init_args", {}).get("image_size", 32)


def solid(mode: str, size: tuple[int, int], colour) -> Image.Image:
    return Image.new(mode, size, colour)


def palette_with_transparency(size: tuple[int, int]) -> Image.Image:
    image = Image.new("P", size, 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, index 1 red
    image.info["transparency"] = 1  # the red index is transparent: shows white
    return image


def grey16(size: tuple[int, int]) -> Image.Image:
    return Image.fromarray(np.full(size[::-1], 32768, dtype=np.uint16))  # I;16, half of 65535


# name -> (builder, save options, the RGB colour it shows, over white where transparent)
FORMATS: dict[str, tuple[Callable[[], Image.Image], dict, tuple[int, int, int]]] = {
    "rgb.jpg": (lambda: solid("RGB", (60, 40), (200, 30, 30)), {"quality": 95}, (200, 30, 30)),
    "upper.JPEG": (lambda: solid("RGB", (40, 60), (30, 200, 30)), {"quality": 95}, (30, 200, 30)),
    "grey.png": (lambda: solid("L", (50, 50), 100), {}, (100, 100, 100)),
    "grey_alpha.png": (lambda: solid("LA", (50, 30), (0, 0)), {}, (255, 255, 255)),
    "rgba.png": (lambda: solid("RGBA", (30, 50), (0, 0, 255, 0)), {}, (255, 255, 255)),
    "half_alpha.png": (lambda: solid("RGBA", (30, 50), (0, 0, 0, 128)), {}, (127, 127, 127)),
    "palette.png": (lambda: palette_with_transparency((40, 40)), {}, (255, 255, 255)),
    "grey16.png": (lambda: grey16((40, 48)), {}, (128, 128, 128)),
    "bilevel.png": (lambda: solid("1", (40, 40), 1), {}, (255, 255, 255)),
    "cmyk.jpg": (lambda: solid("CMYK", (40, 40), (255, 0, 0, 0)), {"quality": 95}, (0, 255, 255)),
    "photo.webp": (lambda: solid("RGB", (64, 48), (10, 20, 200)), {"lossless": True}, (10, 20, 200)),
    "bitmap.bmp": (lambda: solid("RGB", (33, 47), (120, 60, 30)), {}, (120, 60, 30)),
    "scan.tiff": (lambda: solid("RGB", (48, 32), (90, 90, 200)), {}, (90, 90, 200)),
    "cmyk.tif": (lambda: solid("CMYK", (48, 32), (0, 255, 0, 0)), {}, (255, 0, 255)),
    "image.ppm": (lambda: solid("RGB", (32, 32), (5, 250, 5)), {}, (5, 250, 5)),
    "drawing.gif": (lambda: solid("P", (32, 32), 0), {}, (0, 0, 0)),  # first frame black, see write_image
}


def write_image(path: Path, name: str) -> tuple[int, int, int]:
    """Write FORMATS[name] at `path`; the colour it should decode to."""
    build, options, colour = FORMATS[name]
    path.parent.mkdir(parents=True, exist_ok=True)
    image = build()
    if name.endswith(".gif"):  # two frames: black then white; only the first is read
        image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        second = Image.new("P", image.size, 1)
        second.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        image.save(path, save_all=True, append_images=[second])
    else:
        image.save(path, **options)
    return colour


def exif_rotated_jpeg(path: Path, scale: int = 1) -> None:
    """A 40x20 JPEG (times `scale`), left half black and right half white, whose EXIF says to rotate it 90 degrees
    clockwise (orientation 6): shown upright it is 20x40 with black on top."""
    pixels = np.zeros((20 * scale, 40 * scale, 3), np.uint8)
    pixels[:, 20 * scale :] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=95, exif=exif)


def jpeg_bytes(colour=(128, 64, 32), size=(40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def broken_files(folder: Path) -> list[Path]:
    """A truncated JPEG, an empty PNG and random bytes named .jpg: image names that do not decode."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "truncated.jpg", folder / "empty.png", folder / "garbage.jpg"]
    paths[0].write_bytes(jpeg_bytes()[:300])
    paths[1].write_bytes(b"")
    paths[2].write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    return paths


def non_images(folder: Path) -> None:
    """Files a folder of photographs also holds, none of them images, and hidden images: all ignored."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0" * 64)
    (folder / "labels.csv").write_text("a,b\n")
    (folder / ".hidden.jpg").write_bytes(jpeg_bytes())
    (folder / ".thumbnails").mkdir(exist_ok=True)
    (folder / ".thumbnails" / "x.png").write_bytes(b"")  # would be broken, were it read


def photo_folder(root: Path, count: int, classes: tuple[str, ...] = ("cats", "dogs")) -> Path:
    """`count` decodable JPEGs spread over class subfolders (nested one level deeper for some), plus non-images."""
    rng = np.random.default_rng(1)
    for i in range(count):
        folder = root / classes[i % len(classes)] / ("nested" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        size = (int(rng.integers(40, 90)), int(rng.integers(40, 90)))
        (folder / f"img{i:03d}.jpg").write_bytes(jpeg_bytes(tuple(int(v) for v in rng.integers(0, 256, 3)), size))
    non_images(root)
    return root


def fake_celeba(root: Path, counts: tuple[int, int, int] = (64, 8, 8), draw=None) -> Path:
    """`root/celeba/` in torchvision's layout: 178x218 JPEGs and list_eval_partition.txt; the other text files
    torchvision's download expects, in their formats."""
    folder = root / "celeba"
    images = folder / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    names, lines = [], []
    for split, count in enumerate(counts):
        for _ in range(count):
            name = f"{len(names) + 1:06d}.jpg"
            names.append(name)
            lines.append(f"{name} {split}")
            pixels = draw(len(names)) if draw else np.full((218, 178, 3), rng.integers(0, 256, 3), np.uint8)
            Image.fromarray(pixels).save(images / name, quality=90)
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return root


def celeba_text_files(folder: Path, names: list[str]) -> None:
    """identity, attributes, boxes and landmarks files as torchvision parses them (count line, header, rows)."""
    (folder / "identity_CelebA.txt").write_text("".join(f"{n} 1\n" for n in names))
    for filename, header, values in (
        ("list_attr_celeba.txt", "Smiling Young", "1 -1"),
        ("list_bbox_celeba.txt", "image_id x_1 y_1 width height", "1 2 3 4"),
        ("list_landmarks_align_celeba.txt", "lefteye_x lefteye_y", "5 6"),
    ):
        (folder / filename).write_text(f"{len(names)}\n{header}\n" + "".join(f"{n} {values}\n" for n in names))


@pytest.fixture(scope="session")
def _celeba_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fake_celeba(tmp_path_factory.mktemp("celeba-src"))


@pytest.fixture
def celeba_root(_celeba_files: Path, tmp_path: Path) -> Path:
    """A fake CelebA (64 train, 8 valid, 8 test 178x218 JPEGs) in torchvision's layout, one per test."""
    return Path(shutil.copytree(_celeba_files, tmp_path / "data"))


@pytest.fixture(scope="session")
def _photo_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return photo_folder(tmp_path_factory.mktemp("photos-src") / "photos", 80)


@pytest.fixture
def image_folder_root(_photo_files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of 80 JPEGs of mixed sizes in two class folders, nested, with non-image files; its cache goes
    under the test's directory (XDG_CACHE_HOME), never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return Path(shutil.copytree(_photo_files, tmp_path / "photos"))
