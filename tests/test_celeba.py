"""CelebADataModule on a fake CelebA in torchvision's layout; its download through a local mirror, never the network."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from image_fixtures import celeba_text_files, fake_celeba
from torchvision import datasets
from torchvision.datasets import celeba as torchvision_celeba

from gon_lightning.data import CelebADataModule
from gon_lightning.errors import UserError


def celeba(root: Path, **kwargs) -> CelebADataModule:
    return CelebADataModule(root, **{"batch_size": 8, "image_size": 16, "download": False, **kwargs})


def test_official_partition_gives_train_valid_test(celeba_root):
    data = celeba(celeba_root)
    data.setup("fit")
    shapes = {name: tuple(images.shape) for name, images in data.splits.items()}
    assert shapes == {"train": (64, 3, 16, 16), "val": (8, 3, 16, 16), "test": (8, 3, 16, 16)}
    first_val = Path(celeba_root / "celeba/img_align_celeba/000065.jpg")  # line 65 of the partition: split 1
    assert data.split_files()["val"][0][0] == str(first_val)
    held_out = celeba(celeba_root, val_fraction=0.25)
    held_out.setup("fit")
    assert len(held_out.splits["val"]) == 16  # val_fraction holds out part of train instead


def frame(index: int) -> np.ndarray:
    """Black, with a white 108x108 centre (torchvision's CenterCrop offsets: left 35, top 55)."""
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[55:163, 35:143] = 255
    return pixels


@pytest.mark.parametrize(("crop", "white"), [(108, True), (140, False)])
def test_centre_crop(tmp_path, crop, white):
    root = fake_celeba(tmp_path, (8, 1, 1), draw=frame)
    data = celeba(root, crop=crop, batch_size=4)
    data.setup("fit")
    border = data.splits["train"][:, :, 0, :].float().mean().item()  # the top row of every image
    assert (border > 150) if white else (border < 40)  # the filter reaches a little past the box


def test_changing_the_crop_rebuilds_the_cache(tmp_path):
    root = fake_celeba(tmp_path, (8, 1, 1), draw=frame)
    first = celeba(root, crop=108, batch_size=4)
    first.setup("fit")
    second = celeba(root, crop=178, batch_size=4)
    second.setup("fit")
    assert first.cache_path == second.cache_path
    assert not torch.equal(first.splits["train"], second.splits["train"])
    assert json.loads((second.cache_path / "meta.json").read_text())["fingerprint"]["crop"] == 178


def test_missing_offline_says_where_to_put_the_files(tmp_path):
    with pytest.raises(UserError) as error:
        celeba(tmp_path).prepare_data()
    message = str(error.value)
    for expected in (str(tmp_path / "celeba"), "img_align_celeba", "list_eval_partition.txt", "download is false"):
        assert expected in message


def test_missing_and_broken_images_are_named(celeba_root):
    images = celeba_root / "celeba" / "img_align_celeba"
    (images / "000003.jpg").unlink()
    with pytest.raises(UserError, match=r"1 images listed in .* are not in .* \(first: 000003\.jpg\)"):
        celeba(celeba_root).prepare_data()
    (images / "000003.jpg").write_bytes(b"")
    with pytest.raises(UserError, match=r"1 of 80 image files .*000003\.jpg.*skip_broken"):
        celeba(celeba_root).prepare_data()
    data = celeba(celeba_root, skip_broken=True)
    data.setup("fit")
    assert len(data.splits["train"]) == 63


def test_malformed_partition_line(celeba_root):
    partition = celeba_root / "celeba" / "list_eval_partition.txt"
    partition.write_text(partition.read_text() + "000081.jpg 7\n")
    with pytest.raises(UserError, match=r"line 81 is '000081\.jpg 7'"):
        celeba(celeba_root).prepare_data()


@pytest.fixture
def drive_mirror(tmp_path, monkeypatch) -> list[str]:
    """torchvision's Google Drive download served from a local folder holding CelebA's six files (fake ones, with
    torchvision's MD5 table pointed at them); returns the names fetched."""
    source = fake_celeba(tmp_path / "source", (8, 2, 2)) / "celeba"
    names = sorted(p.name for p in (source / "img_align_celeba").iterdir())
    celeba_text_files(source, names)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "img_align_celeba.zip", "w") as archive:
        for name in names:
            archive.write(source / "img_align_celeba" / name, f"img_align_celeba/{name}")
    for path in source.glob("*.txt"):
        shutil.copy(path, mirror / path.name)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in mirror.iterdir()}
    table = [(file_id, md5[name], name) for file_id, _, name in datasets.CelebA.file_list]
    monkeypatch.setattr(datasets.CelebA, "file_list", table)
    fetched = []

    def from_mirror(file_id, root, filename=None, md5=None):
        fetched.append(filename)
        Path(root).mkdir(parents=True, exist_ok=True)
        shutil.copy(mirror / filename, Path(root) / filename)

    monkeypatch.setattr(torchvision_celeba, "download_file_from_google_drive", from_mirror)
    return fetched


def test_download_through_torchvision(tmp_path, drive_mirror):
    data = CelebADataModule(tmp_path / "data", batch_size=4, image_size=16)
    data.setup("fit")
    assert "img_align_celeba.zip" in drive_mirror and "list_eval_partition.txt" in drive_mirror
    assert [len(data.splits[name]) for name in ("train", "val", "test")] == [8, 2, 2]


def test_failed_download_names_the_folder_and_leaves_nothing(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("To download files from GDrive, 'gdown' is required.")

    monkeypatch.setattr(torchvision_celeba, "download_file_from_google_drive", offline)
    expected = r"CelebA is not in .*the download failed .*gdown.*img_align_celeba/000001\.jpg"
    with pytest.raises(UserError, match=expected):
        CelebADataModule(tmp_path / "data").prepare_data()
    assert not [p for p in (tmp_path / "data").rglob("*") if not p.is_dir()]


def test_bad_crop(tmp_path):
    with pytest.raises(UserError, match="at most 178"):
        celeba(tmp_path, crop=200)
